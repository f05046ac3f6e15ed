/**
 * ACME mode against a real ACME CA (EDGE.md §1, §2, §5): Pebble, started here on loopback, whose
 * HTTP-01 validation connects to the relay's `--http-listen`. Issuance, the certificate on the
 * wire, the cache (modes, reuse across a restart with the CA gone: same serial, no new order),
 * SNI for other names refused, 421 for other Hosts, the challenge listener's 404s, a failed
 * validation, PROXY v2 in front. Renewal and a CA down at boot: `acme-renewal.test.ts`.
 *
 * Skips with one line when Pebble (Debian package `pebble`) or openssl is missing.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  acmeFlags,
  challengeRequest,
  DOMAIN,
  EXPIRY,
  FAILED,
  handshake,
  httpsRequest,
  ISSUED,
  OTHER,
  sni,
  startAcmeRelay,
  untilReady
} from "../support/AcmeClient.ts"
import { dialBinary, dialPhone, envelopes, eventually, upgradeStatus } from "../support/Peers.ts"
import { challtestsrvBinary, type Pebble, pebbleBinary, startPebble } from "../support/Pebble.ts"
import { metricValue, rawConnect, viaProxy } from "../support/ProxyClient.ts"
import { freePort, type RelayProcess, runCli } from "../support/RelayProcess.ts"
import { hasOpenssl } from "../support/TestCa.ts"

const runnable = pebbleBinary !== undefined && challtestsrvBinary !== undefined && hasOpenssl
if (!runnable) {
  console.warn("acme.test.ts: SKIPPED — `pebble`/`pebble-challtestsrv` not found (install the Debian package `pebble`) or no openssl")
}

describe.runIf(runnable)("ACME mode against Pebble", () => {
  let dir: string
  let cache: string
  let httpPort: number
  let pebble: Pebble
  let relay: RelayProcess
  let root: string
  let issuedSerial: string

  beforeAll(async () => {
    dir = mkdtempSync(Path.join(Os.tmpdir(), "relay-acme-"))
    cache = Path.join(dir, "state", "certs")
    httpPort = await freePort()
    pebble = await startPebble({ httpPort, dir: Path.join(dir, "pebble") })
    const started = Date.now()
    relay = await startAcmeRelay(acmeFlags(pebble, cache, httpPort))
    const ready = await untilReady(httpPort, 20_000)
    console.log(JSON.stringify({ case: "acme issuance", boot_to_ready_ms: Date.now() - started, started_to_ready_ms: ready }))
    root = await pebble.issuingRoot()
  }, 60_000)
  afterAll(async () => {
    if (relay !== undefined && relay.child.exitCode === null) await relay.stop()
    if (pebble !== undefined) await pebble.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  it("issues one certificate for exactly the configured names, counted and with its expiry", async () => {
    const shake = await handshake(relay.port, DOMAIN, root)
    expect(shake.error).toBeUndefined()
    expect(shake.names?.split(", ").sort()).toEqual([`DNS:${OTHER}`, `DNS:${DOMAIN}`])
    issuedSerial = shake.serial!
    expect((await handshake(relay.port, OTHER, root)).serial).toBe(issuedSerial)
    expect(await metricValue(relay.metricsUrl, ISSUED)).toBe(1)
    expect(await metricValue(relay.metricsUrl, FAILED)).toBe(0)
    // Pebble's default lifetime is years: the gauge is in the future.
    expect(await metricValue(relay.metricsUrl, EXPIRY)).toBeGreaterThan(Date.now() / 1000 + 86_400)
    expect(relay.logs.some((l) => l.includes(`"certificate issued"`) && l.includes(`"domain":"${DOMAIN},${OTHER}"`))).toBe(true)
    expect(pebble.output().match(/Issued certificate serial/g)).toHaveLength(1)
  })

  it("a handshake for any other name, or with no name at all, fails; the CA never hears of it", async () => {
    expect((await handshake(relay.port, "evil.pyrycode.test", root)).error).toBeDefined()
    expect((await handshake(relay.port, `x.${DOMAIN}`, root)).error).toBeDefined()
    expect((await handshake(relay.port, undefined, root)).error).toBeDefined()
    expect(pebble.output()).not.toContain("evil.pyrycode.test")
    expect(pebble.output().match(/Issued certificate serial/g)).toHaveLength(1)
  })

  it("serves the relay over TLS for a configured Host", async () => {
    const health = await httpsRequest(relay.port, { servername: DOMAIN, host: `${DOMAIN}:${relay.port}`, path: "/healthz", ca: root })
    expect(health.status).toBe(200)
    expect(JSON.parse(health.body)).toMatchObject({ status: "ok" })
    const options = { ca: Buffer.from(root), headers: { Host: DOMAIN }, wsOptions: sni(DOMAIN) }
    const binary = await dialBinary(relay.url, "acme-1", options)
    const phone = await dialPhone(relay.url, "acme-1", { ...options, headers: { Host: OTHER.toUpperCase() } })
    phone.send(`{"over":"acme"}`)
    await binary.waitFor(1)
    binary.send(JSON.stringify({ conn_id: envelopes(binary)[0]!.conn_id, frame: { ok: 1 } }))
    expect(await phone.waitFor(1)).toEqual([`{"ok":1}`])
    phone.ws.close()
    binary.ws.close()
    await Promise.all([phone.closed, binary.closed])
  })

  it("421 with an empty body for any other Host, before anything runs (health and upgrades alike)", async () => {
    for (const host of ["evil.example.com", `${DOMAIN}.evil.com`, "127.0.0.1", `127.0.0.1:${relay.port}`, "[::1]", ""]) {
      for (const path of ["/healthz", "/readyz", "/v1/server", "/nope"]) {
        const response = await httpsRequest(relay.port, { servername: DOMAIN, host, path, ca: root })
        expect(response.status, `${host} ${path}`).toBe(421)
        expect(response.body, `${host} ${path}`).toBe("")
      }
    }
    const headers = { Host: "evil.example.com", "X-Pyrycode-Server": "acme-421", "X-Pyrycode-Version": "1", "User-Agent": "t" }
    expect(await upgradeStatus(`${relay.url}/v1/server`, headers, { ca: Buffer.from(root), ...sni(DOMAIN) })).toBe(421)
    // Nothing ran: no upgrade was counted, nothing was registered.
    expect(await metricValue(relay.metricsUrl, `pyrycode_relay_ws_upgrade_attempts_total{endpoint="server",outcome="reject_headers"}`)).toBe(0)
  })

  it("the challenge listener: /readyz 200 once a certificate is served, 404 (never a redirect) for everything else", async () => {
    expect(await challengeRequest(httpPort, "/readyz")).toMatchObject({ status: 200, body: `{"status":"ready"}` })
    for (const [path, method] of [
      ["/", "GET"],
      ["/healthz", "GET"],
      ["/v1/server", "GET"],
      ["/.well-known/acme-challenge/not-a-pending-token", "GET"],
      ["/.well-known/acme-challenge/", "GET"],
      ["/.well-known/acme-challenge/../readyz", "GET"],
      ["/readyz", "POST"],
      ["/readyz", "HEAD"],
      ["/readyz/x", "GET"]
    ] as const) {
      const response = await challengeRequest(httpPort, path, method)
      expect(response.status, `${method} ${path}`).toBe(404)
      expect(response.location, `${method} ${path}`).toBeNull()
    }
  })

  it("the cache: directory 0700, account key and certificate 0600, no temporary files left", () => {
    expect(statSync(cache).mode & 0o777).toBe(0o700)
    const files = readdirSync(cache).sort()
    expect(files).toEqual(["account.key", `${DOMAIN}.pem`])
    for (const file of files) expect(statSync(Path.join(cache, file)).mode & 0o777, file).toBe(0o600)
  })

  it("a restart reuses the cached certificate without contacting the CA: same serial, no new order", async () => {
    expect(await relay.stop()).toBe(0)
    await pebble.stop()
    relay = await startAcmeRelay(acmeFlags(pebble, cache, httpPort))
    // Ready as soon as it started, with the CA gone.
    expect((await challengeRequest(httpPort, "/readyz")).status).toBe(200)
    expect((await handshake(relay.port, DOMAIN, root)).serial).toBe(issuedSerial)
    expect(await metricValue(relay.metricsUrl, ISSUED)).toBe(0)
    expect(await metricValue(relay.metricsUrl, FAILED)).toBe(0)
    expect(relay.logs.some((l) => l.includes(`"certificate loaded"`))).toBe(true)
    expect(relay.logs.some((l) => l.includes(`"certificate order failed"`))).toBe(false)
  })
})

describe.runIf(runnable)("a validation the CA cannot complete", () => {
  it("is logged with the CA's error type only, counted failed, and the relay stays up", async () => {
    const dir = mkdtempSync(Path.join(Os.tmpdir(), "relay-acme-invalid-"))
    // Pebble validates against a port nobody listens on.
    const pebble = await startPebble({ httpPort: await freePort(), dir: Path.join(dir, "pebble") })
    const relay = await startAcmeRelay(acmeFlags(pebble, Path.join(dir, "certs"), await freePort()))
    try {
      await eventually(() => relay.logs.some((l) => l.includes(`"certificate order failed"`)), 20_000)
      const line = JSON.parse(relay.logs.find((l) => l.includes(`"certificate order failed"`))!) as Record<string, unknown>
      expect(line.error).toMatch(/^urn:ietf:params:acme:error:/)
      console.log(JSON.stringify({ case: "acme validation failure", error: line.error }))
      expect(Object.keys(line).sort()).toEqual(["domain", "error", "event", "level", "time"])
      expect(await metricValue(relay.metricsUrl, FAILED)).toBe(1)
      expect(relay.child.exitCode).toBeNull()
    } finally {
      await relay.stop()
      await pebble.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe.runIf(runnable)("ACME mode behind a TCP balancer (--proxy-protocol)", () => {
  it("the TLS listener wants the PROXY header first; the challenge listener never does", async () => {
    const dir = mkdtempSync(Path.join(Os.tmpdir(), "relay-acme-proxy-"))
    const httpPort = await freePort()
    const pebble = await startPebble({ httpPort, dir: Path.join(dir, "pebble") })
    const relay = await startAcmeRelay([...acmeFlags(pebble, Path.join(dir, "certs"), httpPort), "--proxy-protocol", "--max-connections-per-ip", "1"])
    try {
      // Issued through the plain challenge listener.
      await untilReady(httpPort, 20_000)
      const root = Buffer.from(await pebble.issuingRoot())
      // Without a header: closed, nothing written.
      const direct = await rawConnect(relay.port)
      direct.write("\x16\x03\x01")
      expect((await direct.outcome).received.length).toBe(0)
      // With one: TLS, SNI, Host check, and the header's address for the per-IP cap.
      const tls = { ca: root, servername: DOMAIN }
      const options = { ca: root, headers: { Host: DOMAIN }, wsOptions: { ...sni(DOMAIN), createConnection: viaProxy("198.51.100.77", tls) } }
      const binary = await dialBinary(relay.url, "acme-pp-1", options)
      const headers = { Host: DOMAIN, "X-Pyrycode-Server": "acme-pp-2", "X-Pyrycode-Version": "1", "User-Agent": "t" }
      expect(await upgradeStatus(`${relay.url}/v1/server`, headers, { ca: root, createConnection: viaProxy("198.51.100.77", tls) })).toBe(503)
      await eventually(() => relay.logs.some((l) => l.includes(`"connection cap reached"`) && l.includes(`"remote":"198.51.100.77"`)))
      binary.ws.close()
      await binary.closed
    } finally {
      await relay.stop()
      await pebble.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe("ACME boot refusals", () => {
  it("--domain with --listen, or with --tls-cert, exits 2 naming both", async () => {
    const listen = await runCli(["--domain", DOMAIN, "--listen", "127.0.0.1:8443", "--metrics-listen", ""])
    expect(listen.code).toBe(2)
    expect(listen.stderr.trim().split("\n")).toHaveLength(1)
    expect(listen.stderr).toContain("--domain cannot be combined with --listen")
    const tls = await runCli(["--domain", DOMAIN, "--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--metrics-listen", ""])
    expect(tls.code).toBe(2)
    expect(tls.stderr).toContain("--domain cannot be combined with --tls-cert")
  })
})
