/**
 * What the relay's logs may carry (SPEC §11): a full session — claims, phones, frames both ways,
 * a close directive, grace, reclaim, expiry, every rejection, bad envelopes, a push wake — run
 * with a known token, frame payload, User-Agent and FCM token. Afterwards no stderr line contains
 * any of them, every line is one JSON object with a fixed event and only allowlisted keys, and
 * `/metrics` carries neither the secrets nor a server-id (SPEC §8.1).
 */
import WebSocket from "ws"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type RelayProcess, startRelay } from "../support/RelayProcess.ts"
import { dialBinary, dialPhone, envelopes, eventually, type Peer, upgradeStatus } from "../support/Peers.ts"

const TOKEN = "tok-9f3a-SECRET"
const PAYLOAD = "FRAME-PAYLOAD-7c1e"
const USER_AGENT = "UA-SECRET-5d2b"
const FCM_TOKEN = "FCM-TOKEN-SECRET-41aa"
const SECRETS = [TOKEN, PAYLOAD, USER_AGENT, FCM_TOKEN]

const SID_MAIN = `logsec-main-${process.pid}`
const SID_EXPIRE = `logsec-expire-${process.pid}`
const SID_MISSING = `logsec-missing-${process.pid}`
const SERVER_IDS = [SID_MAIN, SID_EXPIRE, SID_MISSING]

/** SPEC §11's events, plus the push events PUSH.md names. */
const EVENTS = new Set([
  "server claimed",
  "server id conflict",
  "server takeover",
  "server released",
  "grace reclaimed",
  "grace expired",
  "phone registered",
  "phone unregistered",
  "phone rejected",
  "phone closed by binary",
  "envelope dropped",
  "rate limited",
  "connection cap reached",
  "heartbeat timeout",
  "relay started",
  "shutdown started",
  "shutdown complete",
  "drain incomplete",
  "push wake dropped",
  "push wake sent",
  "push wake failed",
  "push off"
])

/** SPEC §11's annotation keys, the boot-time config keys, and the logger's own three. */
const KEYS = new Set([
  "server_id",
  "conn_id",
  "binary_conn_id",
  "device_name",
  "remote",
  "binary_version",
  "close_code",
  "reason",
  "path",
  "endpoint",
  "duration",
  "error",
  "suppressed",
  "token_fp",
  "fcm_message_id",
  "version",
  "listen",
  "metrics_listen",
  "tls",
  "push",
  "limits",
  // EDGE.md's boot-time settings (and `domain`, which its certificate events carry).
  "proxy_protocol",
  "domain",
  "cert_cache",
  "http_listen",
  "time",
  "level",
  "event"
])

const binaryHeaders = { "User-Agent": USER_AGENT, "X-Pyrycode-Version": "pyry-9.9" }
const phoneHeaders = { "X-Pyrycode-Token": TOKEN, "User-Agent": USER_AGENT, "X-Pyrycode-Device-Name": "Test Pixel" }
const frame = (n: number) => JSON.stringify({ payload: PAYLOAD, n })

let relay: RelayProcess
let metricsText = ""
let healthText = ""
let exitCode: number | null = null

const bin = (serverId: string) => dialBinary(relay.url, serverId, { headers: binaryHeaders })
const phone = (serverId: string) => dialPhone(relay.url, serverId, { headers: phoneHeaders })

/** The phone's conn_id, learnt from the envelope its first frame arrived in. */
const connIdOf = async (binary: Peer, index: number): Promise<string> => {
  await binary.waitFor(index + 1)
  return envelopes(binary)[index]!.conn_id as string
}

beforeAll(async () => {
  relay = await startRelay(["--grace-period", "300ms", "--max-phones-per-server", "2"])

  // A binary, two phones, frames both ways.
  const binary = await bin(SID_MAIN)
  const phoneA = await phone(SID_MAIN)
  const phoneB = await phone(SID_MAIN)
  phoneA.send(frame(1))
  const connA = await connIdOf(binary, 0)
  phoneB.send(frame(2))
  const connB = await connIdOf(binary, 1)
  expect(envelopes(binary)[1]!.frame).toEqual({ payload: PAYLOAD, n: 2 })
  binary.send(JSON.stringify({ conn_id: connA, frame: { payload: PAYLOAD, n: 3 } }))
  expect(await phoneA.waitFor(1)).toEqual([`{"payload":"${PAYLOAD}","n":3}`])

  // Rejections: 4429 (third phone, cap 2), 4409 (duplicate binary), 4404 (no binary), 400.
  const third = await phone(SID_MAIN)
  expect(await third.closed).toEqual({ code: 4429, reason: "too many phones for server-id" })
  const duplicate = await bin(SID_MAIN)
  expect((await duplicate.closed).code).toBe(4409)
  const orphan = await phone(SID_MISSING)
  expect((await orphan.closed).code).toBe(4404)
  expect(await upgradeStatus(`${relay.url}/v1/client`, phoneHeaders)).toBe(400)
  expect(await upgradeStatus(`${relay.url}/v1/server`, { ...binaryHeaders, "X-Pyrycode-Server": SID_MAIN, "X-Pyrycode-Version": "" }))
    .toBe(400)

  // Bad envelopes (malformed, not JSON, missing frame), an unknown conn_id, a push wake.
  binary.send(JSON.stringify({ conn_id: 7, frame: { payload: PAYLOAD } }))
  binary.send(`not json ${PAYLOAD}`)
  binary.send(JSON.stringify({ conn_id: connA, note: PAYLOAD }))
  binary.send(JSON.stringify({ conn_id: `client-${SID_MAIN}-deadbeef`, frame: { payload: PAYLOAD } }))
  binary.send(JSON.stringify({ push_wake: { platform: "fcm", token: FCM_TOKEN } }))

  // A close directive: phone B gets the frame, then 4000.
  binary.send(JSON.stringify({ conn_id: connB, frame: { payload: PAYLOAD, n: 4 }, close_code: 4000 }))
  expect(await phoneB.waitFor(1)).toEqual([`{"payload":"${PAYLOAD}","n":4}`])
  expect((await phoneB.closed).code).toBe(4000)

  // Phone A leaves on its own: the binary hears of it (SPEC §2.4), and never of phone B, which
  // it closed itself. A phone sending non-JSON is closed 1000.
  phoneA.ws.close(4100)
  await phoneA.closed
  const notices = () => envelopes(binary).filter((e) => "close_code" in e && !("frame" in e))
  await eventually(() => notices().some((e) => e.conn_id === connA))
  expect(notices().find((e) => e.conn_id === connA)).toEqual({ conn_id: connA, close_code: 4100 })
  const chatty = await phone(SID_MAIN)
  chatty.send(`{"payload":"${PAYLOAD}"`)
  expect((await chatty.closed).code).toBe(1000)

  expect(notices().filter((e) => e.conn_id === connB), `notice for a phone closed by directive: ${connB} in ${binary.messages.join(" ")}`)
    .toEqual([])

  // Disconnect into grace, a phone joins during grace, a reclaim evicts it.
  const lingering = await phone(SID_MAIN)
  binary.ws.terminate()
  await eventually(() => relay.logs.some((l) => l.includes(`"server released"`)))
  const reclaimer = await bin(SID_MAIN)
  expect(await lingering.closed).toEqual({ code: 4404, reason: "binary reclaimed server-id" })

  // A grace that expires.
  const expiring = await bin(SID_EXPIRE)
  const expiringPhone = await phone(SID_EXPIRE)
  expiringPhone.send(frame(5))
  await expiring.waitFor(1)
  expiring.ws.close()
  expect((await expiringPhone.closed).code).toBe(1000)
  await eventually(() => relay.logs.some((l) => l.includes(`"grace expired"`)))

  // One live session left for the drain to close.
  const last = await phone(SID_MAIN)
  last.send(frame(6))
  await reclaimer.waitFor(1)
  reclaimer.send(JSON.stringify({ conn_id: envelopes(reclaimer)[0]!.conn_id, frame: { payload: PAYLOAD, n: 7 } }))
  await last.waitFor(1)

  metricsText = await (await fetch(relay.metricsUrl)).text()
  healthText = await (await fetch(`${relay.httpUrl}/healthz`)).text()
  exitCode = await relay.stop("SIGTERM")
  expect((await last.closed).code).toBe(1001)
  expect((await reclaimer.closed).code).toBe(1001)
}, 60_000)

afterAll(async () => {
  await relay?.stop("SIGKILL")
})

describe("logs of a full session", () => {
  const lines = () => relay.logs.filter((l) => l.length > 0)
  const parsed = () => lines().map((l) => JSON.parse(l) as Record<string, unknown>)

  it("the relay exited 0 after the drain", () => {
    expect(exitCode).toBe(0)
  })

  it("covered the session: the events the scenario must have produced are there", () => {
    const seen = new Set(parsed().map((l) => l.event))
    for (const event of [
      "relay started",
      "server claimed",
      "server id conflict",
      "phone registered",
      "phone rejected",
      "envelope dropped",
      "push wake dropped",
      "phone closed by binary",
      "phone unregistered",
      "server released",
      "grace reclaimed",
      "grace expired",
      "shutdown started",
      "shutdown complete"
    ]) {
      expect(seen, event).toContain(event)
    }
  })

  it("contains no token, frame payload, User-Agent or FCM token", () => {
    expect(lines().length).toBeGreaterThan(10)
    for (const line of lines()) {
      for (const secret of SECRETS) expect(line, line).not.toContain(secret)
    }
  })

  it("is one JSON object per line with a fixed event and allowlisted keys only", () => {
    for (const line of lines()) {
      let entry: unknown
      expect(() => (entry = JSON.parse(line)), line).not.toThrow()
      expect(typeof entry === "object" && entry !== null && !Array.isArray(entry), line).toBe(true)
      const record = entry as Record<string, unknown>
      expect(EVENTS, line).toContain(record.event)
      expect(["debug", "info", "warn", "warning", "error"], line).toContain(record.level)
      expect(Number.isNaN(Date.parse(String(record.time))), line).toBe(false)
      for (const key of Object.keys(record)) expect(KEYS, `${key} in ${line}`).toContain(key)
    }
  })

  it("annotation values are short scalars, except the boot-time limits object", () => {
    for (const record of parsed()) {
      for (const [key, value] of Object.entries(record)) {
        if (key === "limits") {
          expect(record.event).toBe("relay started")
          continue
        }
        expect(["string", "number", "boolean"], key).toContain(typeof value)
        if (typeof value === "string") expect(value.length, `${key}=${value}`).toBeLessThan(200)
      }
    }
  })
})

describe("what the relay publishes", () => {
  it("/metrics carries no secret and no server-id", () => {
    expect(metricsText).toContain("pyrycode_relay_frames_forwarded_total")
    for (const needle of [...SECRETS, ...SERVER_IDS, "logsec"]) expect(metricsText).not.toContain(needle)
  })

  it("/healthz carries no secret and no server-id", () => {
    expect(JSON.parse(healthText)).toMatchObject({ status: "ok" })
    for (const needle of [...SECRETS, ...SERVER_IDS]) expect(healthText).not.toContain(needle)
  })
})

// SPEC §11 lists `heartbeat timeout` among the events to log: an operator must be able to tell
// why a binary went into grace.
describe("heartbeat timeout", () => {
  it("is logged, with the server-id and no secret", async () => {
    const hb = await startRelay(["--heartbeat-interval", "300ms", "--heartbeat-timeout", "300ms"])
    try {
      const ws = new WebSocket(`${hb.url}/v1/server`, {
        autoPong: false,
        headers: { "X-Pyrycode-Server": "logsec-hb", "X-Pyrycode-Version": "1", "User-Agent": USER_AGENT }
      })
      ws.on("error", () => {})
      const closed = new Promise<number>((resolve) => ws.on("close", (code: number) => resolve(code)))
      expect(await closed).toBe(1011)
      await eventually(() => hb.logs.some((l) => l.includes(`"heartbeat timeout"`)), 3000).catch(() => {})
      const line = hb.logs.find((l) => l.includes(`"heartbeat timeout"`))
      expect(line, `no "heartbeat timeout" line in:\n${hb.logs.join("\n")}`).toBeDefined()
      expect(JSON.parse(line!)).toMatchObject({ event: "heartbeat timeout", server_id: "logsec-hb" })
      expect(line).not.toContain(USER_AGENT)
    } finally {
      await hb.stop()
    }
  })
})
