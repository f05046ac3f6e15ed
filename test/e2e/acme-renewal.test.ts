/**
 * ACME mode over time, against Pebble (EDGE.md §1, §5): a short-lived certificate renewed at two
 * thirds of its life and swapped in without a restart or a dropped connection; a CA that is down
 * at boot (the relay stays up, retries after a minute, recovers). In a file of its own because
 * both wait on real time (about 20 s and 65 s).
 *
 * Skips with one line when Pebble (Debian package `pebble`) or openssl is missing.
 */
import { X509Certificate } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import {
  acmeFlags,
  challengeRequest,
  DOMAIN,
  EXPIRY,
  FAILED,
  handshake,
  ISSUED,
  OTHER,
  sni,
  startAcmeRelay,
  untilReady
} from "../support/AcmeClient.ts"
import { dialBinary, dialPhone, envelopes, eventually } from "../support/Peers.ts"
import { challtestsrvBinary, type Pebble, pebbleBinary, pebbleTls, startPebble } from "../support/Pebble.ts"
import { metricValue } from "../support/ProxyClient.ts"
import { freePort, type RelayProcess } from "../support/RelayProcess.ts"
import { hasOpenssl } from "../support/TestCa.ts"

const runnable = pebbleBinary !== undefined && challtestsrvBinary !== undefined && hasOpenssl
if (!runnable) {
  console.warn("acme-renewal.test.ts: SKIPPED — `pebble`/`pebble-challtestsrv` not found (install the Debian package `pebble`) or no openssl")
}

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
