/**
 * TLS on the public listener (SPEC §1.1, §9): with `--tls-cert`/`--tls-key` the relay serves
 * HTTPS/WSS from a certificate made here by a throwaway CA, refuses anything below TLS 1.2, and
 * relays phone↔binary traffic over `wss://` exactly as over `ws://`.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Https from "node:https"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Tls from "node:tls"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type RelayProcess, runCli, startRelay } from "../support/RelayProcess.ts"
import { dialBinary, dialPhone, envelopes } from "../support/Peers.ts"

const hasOpenssl = (() => {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

if (!hasOpenssl) {
  // Node's crypto cannot issue X.509 certificates, so without openssl there is nothing to serve.
  console.warn("tls.test.ts: skipped — `openssl` is not on PATH (needed to make a test CA and certificate)")
}

/** A CA and a server certificate for 127.0.0.1 (SAN IP), signed by it. */
const makeCertificates = (dir: string) => {
  const openssl = (...args: Array<string>) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" })
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
    "-subj", "/CN=pyrycode relay test CA")
  openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
  writeFileSync(
    Path.join(dir, "server.ext"),
    [
      "subjectAltName=IP:127.0.0.1",
      "basicConstraints=CA:FALSE",
      "keyUsage=digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth"
    ].join("\n") + "\n"
  )
  openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "server.pem", "-days", "1", "-extfile", "server.ext")
  return {
    ca: readFileSync(Path.join(dir, "ca.pem")),
    cert: Path.join(dir, "server.pem"),
    key: Path.join(dir, "server.key"),
    certPem: readFileSync(Path.join(dir, "server.pem")),
    keyPem: readFileSync(Path.join(dir, "server.key"))
  }
}

/** A TLS handshake with these options: the negotiated protocol, or the error code. */
const handshake = (port: number, options: Tls.ConnectionOptions): Promise<{ protocol?: string; error?: string }> =>
  new Promise((resolve) => {
    const socket = Tls.connect({ host: "127.0.0.1", port, ...options }, () => {
      const protocol = socket.getProtocol() ?? "unknown"
      socket.end()
      resolve({ protocol })
    })
    socket.once("error", (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }))
  })

/** Options that make Node's OpenSSL willing to offer TLS 1.0/1.1 (it will not by default). */
const legacyOnly: Tls.ConnectionOptions = { minVersion: "TLSv1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" }

const httpsGet = (url: string, ca: Buffer): Promise<{ status: number; body: string; type: string | undefined }> =>
  new Promise((resolve, reject) => {
    Https.get(url, { ca }, (res) => {
      let body = ""
      res.on("data", (d: Buffer) => (body += d.toString()))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, type: res.headers["content-type"] }))
    }).once("error", reject)
  })

describe.skipIf(!hasOpenssl)("TLS listener", () => {
  let dir: string
  let certs: ReturnType<typeof makeCertificates>
  let relay: RelayProcess

  beforeAll(async () => {
    dir = mkdtempSync(Path.join(Os.tmpdir(), "relay-tls-"))
    certs = makeCertificates(dir)
    relay = await startRelay(["--tls-cert", certs.cert, "--tls-key", certs.key], { tls: true })
  })
  afterAll(async () => {
    if (relay !== undefined) expect(await relay.stop()).toBe(0)
    rmSync(dir, { recursive: true, force: true })
  })

  it("logs tls: true at start", () => {
    const started = JSON.parse(relay.logs.find((l) => l.includes(`"relay started"`))!) as { tls: boolean }
    expect(started.tls).toBe(true)
  })

  it("completes a phone↔binary round trip over wss:// with the test CA", async () => {
    const binary = await dialBinary(relay.url, "tls-1", { ca: certs.ca })
    const phone = await dialPhone(relay.url, "tls-1", { ca: certs.ca })
    phone.send(`{"hello":"over tls"}`)
    await binary.waitFor(1)
    const envelope = envelopes(binary)[0]!
    expect(envelope.frame).toEqual({ hello: "over tls" })
    binary.send(JSON.stringify({ conn_id: envelope.conn_id, frame: { reply: 1 } }))
    expect(await phone.waitFor(1)).toEqual([`{"reply":1}`])
    expect(phone.binaryFlags).toEqual([false])
    phone.ws.close(1000)
    expect(await phone.closed).toMatchObject({ code: 1000 })
    binary.ws.close()
    await binary.closed
  })

  it("refuses a wss:// client that does not trust the certificate", async () => {
    await expect(dialBinary(relay.url, "tls-untrusted")).rejects.toThrow()
  })

  it("does not speak plain ws:// on the TLS port", async () => {
    await expect(dialBinary(`ws://127.0.0.1:${relay.port}`, "tls-plain")).rejects.toThrow()
  })

  it("serves /healthz and /readyz over https", async () => {
    const health = await httpsGet(`${relay.httpUrl}/healthz`, certs.ca)
    expect(health.status).toBe(200)
    expect(health.type).toBe("application/json; charset=utf-8")
    expect(JSON.parse(health.body)).toMatchObject({ status: "ok" })
    const ready = await httpsGet(`${relay.httpUrl}/readyz`, certs.ca)
    expect(ready).toMatchObject({ status: 200, body: `{"status":"ready"}` })
  })

  it("negotiates TLS 1.2 or newer, and accepts a TLS 1.2-only client", async () => {
    const modern = await handshake(relay.port, { ca: certs.ca })
    expect(["TLSv1.2", "TLSv1.3"]).toContain(modern.protocol)
    expect(await handshake(relay.port, { ca: certs.ca, maxVersion: "TLSv1.2" })).toEqual({ protocol: "TLSv1.2" })
  })

  it("refuses a client that speaks at most TLS 1.1", async () => {
    // Control: a server that allows TLS 1.1 shows this client really can speak it here. If the
    // local OpenSSL cannot offer TLS 1.1 at all, refusal proves nothing, so assert ≥ 1.2 instead.
    const control = Tls.createServer({ cert: certs.certPem, key: certs.keyPem, minVersion: "TLSv1", ciphers: "DEFAULT@SECLEVEL=0" })
    await new Promise<void>((resolve) => control.listen(0, "127.0.0.1", resolve))
    const controlResult = await handshake((control.address() as { port: number }).port, { ca: certs.ca, ...legacyOnly })
    await new Promise<void>((resolve) => control.close(() => resolve()))

    const result = await handshake(relay.port, { ca: certs.ca, ...legacyOnly })
    if (controlResult.protocol === "TLSv1.1") {
      expect(result.protocol).toBeUndefined()
      expect(result.error).toBe("ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION")
    } else {
      console.warn(`tls.test.ts: local OpenSSL cannot speak TLS 1.1 (${controlResult.error}); checking ≥ TLS 1.2 only`)
      const modern = await handshake(relay.port, { ca: certs.ca })
      expect(["TLSv1.2", "TLSv1.3"]).toContain(modern.protocol)
    }
    // Whatever happened, the relay is still serving.
    expect((await httpsGet(`${relay.httpUrl}/healthz`, certs.ca)).status).toBe(200)
  })
})

describe("TLS files", () => {
  it("a missing certificate file exits 1 (a listener that cannot be set up), naming the problem", async () => {
    const result = await runCli([
      "--listen",
      `127.0.0.1:${await freePort()}`,
      "--metrics-listen",
      "",
      "--tls-cert",
      "/nonexistent/relay-cert.pem",
      "--tls-key",
      "/nonexistent/relay-key.pem"
    ])
    expect(result.code, result.stderr).toBe(1)
    expect(result.stderr).toContain("/nonexistent/relay-cert.pem")
    expect(result.stderr).not.toContain("relay started")
  })
})
