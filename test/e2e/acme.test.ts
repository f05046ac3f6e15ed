/**
 * ACME mode against a real ACME CA (EDGE.md §1, §2, §5): Pebble, started here on loopback, whose
 * HTTP-01 validation connects to the relay's `--http-listen`. Issuance, the certificate on the
 * wire, the cache (modes, reuse across a restart with the CA gone: same serial, no new order),
 * SNI for other names refused, 421 for other Hosts, the challenge listener's 404s.
 *
 * Skips with one line when Pebble (Debian package `pebble`) or openssl is missing.
 */
import { X509Certificate } from "node:crypto"
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type WebSocket from "ws"
import { challengeRequest, handshake, httpsRequest } from "../support/AcmeClient.ts"
import { dialBinary, dialPhone, envelopes, eventually, upgradeStatus } from "../support/Peers.ts"
import { type Pebble, challtestsrvBinary, pebbleBinary, pebbleTls, startPebble } from "../support/Pebble.ts"
import { metricValue, rawConnect, viaProxy } from "../support/ProxyClient.ts"
import { freePort, type RelayProcess, runCli, startRelay } from "../support/RelayProcess.ts"
import { hasOpenssl } from "../support/TestCa.ts"

const runnable = pebbleBinary !== undefined && challtestsrvBinary !== undefined && hasOpenssl
if (!runnable) {
  console.warn("acme.test.ts: SKIPPED — `pebble`/`pebble-challtestsrv` not found (install the Debian package `pebble`) or no openssl")
}

const DOMAIN = "relay.pyrycode.test"
const OTHER = "alt.pyrycode.test"
const ISSUED = `pyrycode_relay_certificate_orders_total{outcome="issued"}`
const FAILED = `pyrycode_relay_certificate_orders_total{outcome="failed"}`
const EXPIRY = "pyrycode_relay_certificate_expiry_timestamp_seconds"

/** Polls the challenge listener's /readyz until 200; returns how long it took. */
const untilReady = async (httpPort: number, timeoutMs: number): Promise<number> => {
  const started = Date.now()
  await eventually(async () => (await challengeRequest(httpPort, "/readyz").catch(() => ({ status: 0 }))).status === 200, timeoutMs)
  return Date.now() - started
}

const acmeFlags = (pebble: { directoryUrl: string; caFile: string }, cache: string, httpPort: number) => [
  "--domain", `${DOMAIN},${OTHER}`,
  "--acme-directory", pebble.directoryUrl,
  "--acme-ca-file", pebble.caFile,
  "--acme-email", "ops@pyrycode.test",
  "--cert-cache", cache,
  "--http-listen", `127.0.0.1:${httpPort}`
]

/** `ws` passes `servername` on to `tls.connect` (its types do not list it). */
const sni = (servername: string) => ({ servername }) as WebSocket.ClientOptions

const startAcmeRelay = (flags: ReadonlyArray<string>) => startRelay(flags, { tls: true, listenFlag: "--https-listen" })

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

describe.runIf(runnable)("renewal", () => {
  let dir: string
  let pebble: Pebble
  let relay: RelayProcess

  afterAll(async () => {
    if (relay !== undefined && relay.child.exitCode === null) await relay.stop()
    if (pebble !== undefined) await pebble.stop()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  it("a 24 s certificate is renewed after two thirds of its life, served at once, with no restart and no dropped connection", async () => {
    dir = mkdtempSync(Path.join(Os.tmpdir(), "relay-acme-renew-"))
    const httpPort = await freePort()
    pebble = await startPebble({ httpPort, dir: Path.join(dir, "pebble"), validitySeconds: 24 })
    const cache = Path.join(dir, "certs")
    relay = await startAcmeRelay(acmeFlags(pebble, cache, httpPort))
    await untilReady(httpPort, 20_000)
    const root = await pebble.issuingRoot()
    const first = await handshake(relay.port, DOMAIN, root)
    expect(first.error).toBeUndefined()
    const firstIssued = Date.now()

    // A session that lives across the renewal.
    const options = { ca: Buffer.from(root), headers: { Host: DOMAIN }, wsOptions: sni(DOMAIN) }
    const binary = await dialBinary(relay.url, "renew-1", options)
    const phone = await dialPhone(relay.url, "renew-1", options)
    phone.send(`{"before":"renewal"}`)
    await binary.waitFor(1)

    let second: string | undefined
    await eventually(async () => {
      const now = await handshake(relay.port, DOMAIN, root)
      if (now.serial !== undefined && now.serial !== first.serial) second = now.serial
      return second !== undefined
    }, 40_000)
    const renewedAfter = Date.now() - firstIssued
    console.log(JSON.stringify({ case: "acme renewal", lifetime_s: 24, renewed_after_ms: renewedAfter }))
    // Due at 16 s (two thirds of 24 s), not earlier; new handshakes get it at once.
    expect(renewedAfter).toBeGreaterThan(12_000)
    expect(renewedAfter).toBeLessThan(30_000)

    // The session opened on the old certificate carried on.
    phone.send(`{"after":"renewal"}`)
    await binary.waitFor(2)
    expect(envelopes(binary).map((e) => e.frame)).toEqual([{ before: "renewal" }, { after: "renewal" }])
    binary.send(JSON.stringify({ conn_id: envelopes(binary)[0]!.conn_id, frame: { still: "here" } }))
    expect(await phone.waitFor(1)).toEqual([`{"still":"here"}`])
    expect(phone.ws.readyState).toBe(phone.ws.OPEN)
    expect(binary.ws.readyState).toBe(binary.ws.OPEN)
    expect(await metricValue(relay.metricsUrl, ISSUED)).toBeGreaterThanOrEqual(2)
    expect(await metricValue(relay.metricsUrl, FAILED)).toBe(0)
    // The renewed certificate went to the cache too.
    const cached = new X509Certificate(readFileSync(Path.join(cache, `${DOMAIN}.pem`), "utf8").split(/(?=-----BEGIN CERTIFICATE-----)/)[1]!)
    expect([second, (await handshake(relay.port, DOMAIN, root)).serial]).toContain(cached.serialNumber)
    phone.ws.close()
    binary.ws.close()
    await Promise.all([phone.closed, binary.closed])
  }, 90_000)
})

describe.runIf(runnable)("CA unreachable at boot", () => {
  let dir: string
  let pebble: Pebble | undefined
  let relay: RelayProcess

  afterAll(async () => {
    if (relay !== undefined && relay.child.exitCode === null) await relay.stop()
    if (pebble !== undefined) await pebble.stop()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  it("the relay stays up with /readyz 503 and failing handshakes, retries after a minute, and recovers when the CA appears", async () => {
    dir = mkdtempSync(Path.join(Os.tmpdir(), "relay-acme-down-"))
    const httpPort = await freePort()
    const caPort = await freePort()
    const tls = pebbleTls(Path.join(dir, "pebble"))
    relay = await startAcmeRelay(
      acmeFlags({ directoryUrl: `https://127.0.0.1:${caPort}/dir`, caFile: tls.caFile }, Path.join(dir, "certs"), httpPort)
    )
    expect(await challengeRequest(httpPort, "/readyz")).toMatchObject({ status: 503, body: `{"status":"no certificate"}` })
    await eventually(() => relay.logs.some((l) => l.includes(`"certificate order failed"`)), 10_000)
    const failed = JSON.parse(relay.logs.find((l) => l.includes(`"certificate order failed"`))!) as Record<string, unknown>
    // The domain and the error type only.
    expect(failed).toMatchObject({ level: "warn", domain: `${DOMAIN},${OTHER}`, error: "ECONNREFUSED" })
    expect(Object.keys(failed).sort()).toEqual(["domain", "error", "event", "level", "time"])
    expect(await metricValue(relay.metricsUrl, FAILED)).toBe(1)
    expect(await metricValue(relay.metricsUrl, EXPIRY)).toBe(0)
    expect((await handshake(relay.port, DOMAIN, tls.caPem)).error).toBeDefined()
    expect(relay.child.exitCode).toBeNull()

    const failedAt = Date.now()
    pebble = await startPebble({ httpPort, dir: Path.join(dir, "pebble"), port: caPort, tls })
    await untilReady(httpPort, 80_000)
    const recoveredAfter = Date.now() - failedAt
    console.log(JSON.stringify({ case: "acme CA down at boot", recovered_after_ms: recoveredAfter }))
    // The first retry comes one minute after the first failure.
    expect(recoveredAfter).toBeGreaterThan(50_000)
    expect(await metricValue(relay.metricsUrl, ISSUED)).toBe(1)
    expect((await handshake(relay.port, DOMAIN, await pebble.issuingRoot())).error).toBeUndefined()
  }, 120_000)
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
