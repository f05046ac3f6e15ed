/**
 * Every HTTP status and close code of the relay core, end to end against the relay process.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type RelayProcess, startRelay } from "../support/RelayProcess.ts"
import { dialBinary, dialPhone, envelopes, eventually, phonesRegistered, sleep, upgradeStatus } from "../support/Peers.ts"

let relay: RelayProcess
let n = 0
const sid = () => `rej-${process.pid}-${++n}`

beforeAll(async () => {
  relay = await startRelay(["--grace-period", "500ms"])
})
afterAll(async () => {
  await relay.stop()
})

const serverHeaders = (serverId: string) => ({
  "X-Pyrycode-Server": serverId,
  "X-Pyrycode-Version": "1.0",
  "User-Agent": "pyry"
})
const clientHeaders = (serverId: string) => ({
  "X-Pyrycode-Server": serverId,
  "X-Pyrycode-Token": "secret-token",
  "User-Agent": "android"
})

const scrape = async () => (await fetch(relay.metricsUrl)).text()
const metric = async (series: string): Promise<number> => {
  const line = (await scrape()).split("\n").find((l) => l.startsWith(series + " "))
  return line === undefined ? NaN : Number(line.slice(series.length + 1))
}

describe("HTTP before the upgrade", () => {
  it("answers 400 for each missing or empty required header, and registers nothing", async () => {
    for (const [path, headers] of [["/v1/server", serverHeaders("h")], ["/v1/client", clientHeaders("h")]] as const) {
      for (const name of Object.keys(headers)) {
        const without: Record<string, string> = { ...headers }
        delete without[name]
        expect(await upgradeStatus(`${relay.url}${path}`, without)).toBe(400)
        expect(await upgradeStatus(`${relay.url}${path}`, { ...headers, [name]: "" })).toBe(400)
      }
    }
    const health = await (await fetch(`${relay.httpUrl}/healthz`)).json()
    expect(health).toMatchObject({ connected_binaries: 0, connected_phones: 0 })
  })

  // HTTP parsing strips surrounding whitespace (RFC 9110 OWS; Node and Go alike), so a
  // whitespace-only value arrives empty (400); any value with content passes unchecked.
  it("checks presence only: odd values pass, whitespace-only values arrive empty", async () => {
    const serverId = sid()
    expect(await upgradeStatus(`${relay.url}/v1/server`, { ...serverHeaders(serverId), "X-Pyrycode-Version": " \t " }))
      .toBe(400)
    const binary = await dialBinary(relay.url, serverId, { headers: { "X-Pyrycode-Version": " ~ \u00ff" } })
    const phone = await dialPhone(relay.url, serverId, { headers: { "X-Pyrycode-Token": " a b " } })
    phone.send("1")
    await binary.waitFor(1)
    phone.ws.close()
    binary.ws.close()
  })

  it("answers 404 for every path but the exact ones", async () => {
    expect(await upgradeStatus(`${relay.url}/v1/server/`, serverHeaders("x"))).toBe(404)
    expect(await upgradeStatus(`${relay.url}/v1/clients`, clientHeaders("x"))).toBe(404)
    expect((await fetch(`${relay.httpUrl}/healthz/x`)).status).toBe(404)
    expect((await fetch(`${relay.httpUrl}/`)).status).toBe(404)
    expect((await fetch(`${relay.httpUrl}/metrics`)).status).toBe(404)
  })

  it("answers a 4xx for an invalid WebSocket handshake", async () => {
    const response = await fetch(`${relay.httpUrl}/v1/server`, { headers: serverHeaders("x") })
    expect(response.status).toBeGreaterThanOrEqual(400)
    expect(response.status).toBeLessThan(500)
  })
})

describe("claims", () => {
  it("closes a duplicate binary 4409 while the live incumbent and its phones are untouched", async () => {
    const serverId = sid()
    const incumbent = await dialBinary(relay.url, serverId)
    const phone = await dialPhone(relay.url, serverId)
    const newcomer = await dialBinary(relay.url, serverId)
    expect(await newcomer.closed).toEqual({ code: 4409, reason: "server-id already claimed" })
    phone.send(`"still here"`)
    await incumbent.waitFor(1)
    const connId = envelopes(incumbent)[0]!.conn_id as string
    incumbent.send(`{"conn_id":"${connId}","frame":"pong"}`)
    expect(await phone.waitFor(1)).toEqual([`"pong"`])
    phone.ws.close()
    incumbent.ws.close()
  })

  it("reclaim during grace evicts the old phones 4404 and starts the new binary with none", async () => {
    const serverId = sid()
    const first = await dialBinary(relay.url, serverId)
    const phone = await dialPhone(relay.url, serverId)
    await phonesRegistered(relay, serverId)
    first.ws.terminate()
    await sleep(100)
    const lateJoiner = await dialPhone(relay.url, serverId) // phones may register during grace
    await phonesRegistered(relay, serverId, 2)
    const second = await dialBinary(relay.url, serverId)
    expect(await phone.closed).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
    expect(await lateJoiner.closed).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
    const fresh = await dialPhone(relay.url, serverId)
    fresh.send("1")
    await second.waitFor(1)
    await sleep(700) // past the old grace's deadline: nothing happens to the new holder
    expect(fresh.ws.readyState).toBe(fresh.ws.OPEN)
    fresh.ws.close()
    second.ws.close()
  })

  it("grace expiry closes the phones 1000 and counts one expiry", async () => {
    const before = await metric("pyrycode_relay_grace_expiries_total")
    const serverId = sid()
    const binary = await dialBinary(relay.url, serverId)
    const phone = await dialPhone(relay.url, serverId)
    // The pair is established first (in cluster mode the claim and registration are Redis round trips).
    phone.send("1")
    await binary.waitFor(1)
    binary.ws.close()
    expect((await phone.closed).code).toBe(1000)
    // Other tests' graces may expire meanwhile; exact counts are pinned in the metrics tests.
    await eventually(async () => (await metric("pyrycode_relay_grace_expiries_total")) >= before + 1)
    const late = await dialPhone(relay.url, serverId)
    expect(await late.closed).toEqual({ code: 4404, reason: "no server with that id" })
  })

  it("a phone that sends during grace is closed 1000", async () => {
    const serverId = sid()
    const binary = await dialBinary(relay.url, serverId)
    const phone = await dialPhone(relay.url, serverId)
    await phonesRegistered(relay, serverId)
    binary.ws.terminate()
    await sleep(100)
    phone.send("1")
    expect((await phone.closed).code).toBe(1000)
  })
})

describe("phones", () => {
  it("closes a phone 4404 when no binary holds the server-id", async () => {
    const phone = await dialPhone(relay.url, sid())
    expect(await phone.closed).toEqual({ code: 4404, reason: "no server with that id" })
  })

  it("closes the 17th phone 4429", async () => {
    const serverId = sid()
    const binary = await dialBinary(relay.url, serverId)
    const phones = await Promise.all(Array.from({ length: 16 }, () => dialPhone(relay.url, serverId)))
    const extra = await dialPhone(relay.url, serverId)
    expect(await extra.closed).toEqual({ code: 4429, reason: "too many phones for server-id" })
    for (const p of phones) expect(p.ws.readyState).toBe(p.ws.OPEN)
    for (const p of phones) p.ws.close()
    binary.ws.close()
  })
})

describe("message size", () => {
  it("delivers a message of exactly 256 KiB and closes 1009 above it", async () => {
    const serverId = sid()
    const binary = await dialBinary(relay.url, serverId)
    const phone = await dialPhone(relay.url, serverId)
    const exact = `"${"a".repeat(262_144 - 2)}"`
    phone.send(exact)
    await binary.waitFor(1, 10_000)
    expect(JSON.parse(binary.messages[0]!).frame.length).toBe(262_142)
    phone.send(`"${"a".repeat(262_144 - 1)}"`)
    expect((await phone.closed).code).toBe(1009)
    binary.ws.close()
  })
})
