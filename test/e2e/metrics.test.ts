/**
 * The metrics contract (SPEC §8) end to end: real clients drive traffic against a relay process,
 * `/metrics` is scraped over HTTP from its loopback listener, the exposition is parsed into
 * `series → value`, and the WHOLE map is compared with what the test expects — every series,
 * touched or not — so a stray increment anywhere fails as surely as a missing one.
 *
 * Increments trail the observable event (a client sees its close before the relay has counted
 * it), so every expectation is polled until it holds; "stays unchanged" expectations are then
 * re-checked over a window. Each describe has its own relay process: exact counts need a relay
 * no other test talks to.
 */
import { spawnSync } from "node:child_process"
import * as Net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, type RelayProcess, runCli, startRelay } from "../support/RelayProcess.ts"
import { dialBinary, dialPhone, envelopes, eventually, type Peer, sleep, upgradeStatus } from "../support/Peers.ts"

// --- the SPEC §8.2 series set, written out here (not imported from src) -----------------------

type Direction = "phone_to_binary" | "binary_to_phone"
type Endpoint = "server" | "client"
type Outcome = "accept" | "reject_headers" | "reject_409" | "reject_404" | "reject_429" | "reject_rate_limit"
type DropReason =
  | "no_binary"
  | "invalid_json"
  | "binary_write_failed"
  | "malformed_envelope"
  | "unknown_conn_id"
  | "backlog_full"
  | "phone_write_failed"
  | "evicted"
  | "grace_expired"
  | "shutdown"
  | "session_ended"

const DIRECTIONS: ReadonlyArray<Direction> = ["phone_to_binary", "binary_to_phone"]
const OUTCOMES: ReadonlyArray<Outcome> = [
  "accept",
  "reject_headers",
  "reject_409",
  "reject_404",
  "reject_429",
  "reject_rate_limit"
]
const DROP_DIRECTION: Record<DropReason, Direction> = {
  no_binary: "phone_to_binary",
  invalid_json: "phone_to_binary",
  binary_write_failed: "phone_to_binary",
  malformed_envelope: "binary_to_phone",
  unknown_conn_id: "binary_to_phone",
  backlog_full: "binary_to_phone",
  phone_write_failed: "binary_to_phone",
  evicted: "binary_to_phone",
  grace_expired: "binary_to_phone",
  shutdown: "binary_to_phone",
  session_ended: "binary_to_phone"
}
const KINDS = ["no_server", "server_in_use", "phones_at_cap", "ratelimit"] as const
const REJECT_REASONS = ["conn_cap", "per_ip_cap", "handshake_timeout", "draining", "proxy_header"] as const
/** PUSH.md §4: all five exist at 0 from boot, also when push is off (as in these relays). */
const PUSH_OUTCOMES = ["dropped", "sent", "unregistered", "token_fetch_failed", "send_failed"] as const

const S = {
  forwarded: (d: Direction) => `pyrycode_relay_frames_forwarded_total{direction="${d}"}`,
  bytes: (d: Direction) => `pyrycode_relay_bytes_forwarded_total{direction="${d}"}`,
  dropped: (r: DropReason) => `pyrycode_relay_frames_dropped_total{direction="${DROP_DIRECTION[r]}",reason="${r}"}`,
  upgrades: (e: Endpoint, o: Outcome) => `pyrycode_relay_ws_upgrade_attempts_total{endpoint="${e}",outcome="${o}"}`,
  registerFailures: (k: (typeof KINDS)[number]) => `pyrycode_relay_register_failures_total{kind="${k}"}`,
  rejected: (r: (typeof REJECT_REASONS)[number]) => `pyrycode_relay_connections_rejected_total{reason="${r}"}`,
  pushWakes: (o: (typeof PUSH_OUTCOMES)[number]) => `pyrycode_relay_push_wakes_total{outcome="${o}"}`,
  graceExpiries: "pyrycode_relay_grace_expiries_total",
  graceReclaims: "pyrycode_relay_grace_reclaims_total",
  takeovers: "pyrycode_relay_takeovers_total",
  binaries: "pyrycode_relay_connected_binaries",
  phones: "pyrycode_relay_connected_phones",
  buffered: "pyrycode_relay_buffered_bytes",
  // EDGE.md §1: present in every mode; they stay 0 without --domain.
  certificateOrders: (o: "issued" | "failed") => `pyrycode_relay_certificate_orders_total{outcome="${o}"}`,
  certificateExpiry: "pyrycode_relay_certificate_expiry_timestamp_seconds"
} as const

const COUNTERS: ReadonlyArray<string> = [
  ...DIRECTIONS.map(S.forwarded),
  ...DIRECTIONS.map(S.bytes),
  ...(Object.keys(DROP_DIRECTION) as Array<DropReason>).map(S.dropped),
  S.graceExpiries,
  S.graceReclaims,
  S.takeovers,
  ...(["server", "client"] as const).flatMap((e) => OUTCOMES.map((o) => S.upgrades(e, o))),
  ...KINDS.map(S.registerFailures),
  ...REJECT_REASONS.map(S.rejected),
  ...PUSH_OUTCOMES.map(S.pushWakes),
  S.certificateOrders("issued"),
  S.certificateOrders("failed")
]
const GAUGES: ReadonlyArray<string> = [S.binaries, S.phones, S.buffered, S.certificateExpiry]
const ALL_SERIES: ReadonlyArray<string> = [...COUNTERS, ...GAUGES]
const familyOf = (series: string) => series.split("{")[0]!

// --- scraping and parsing ---------------------------------------------------------------------

interface Scrape {
  readonly status: number
  readonly contentType: string | null
  readonly text: string
  /** `series → every value it was written with` (more than one means a duplicated series line). */
  readonly samples: Map<string, Array<number>>
  /** `family → every TYPE it was declared with`. */
  readonly types: Map<string, Array<string>>
  /** Lines that are neither comments nor well-formed samples. */
  readonly garbage: Array<string>
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?[ \t]+(\S+)$/
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g

/** `name{b="2",a="1"}` → `name{a="1",b="2"}`: series identity does not depend on label order. */
const seriesKey = (name: string, labels: string | undefined): string => {
  if (labels === undefined || labels.trim() === "") return name
  const pairs = [...labels.matchAll(LABEL)].map((m) => `${m[1]}="${m[2]}"`).sort()
  return `${name}{${pairs.join(",")}}`
}

const parse = (text: string) => {
  const samples = new Map<string, Array<number>>()
  const types = new Map<string, Array<string>>()
  const garbage: Array<string> = []
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("# HELP ")) continue
    if (line.startsWith("# TYPE ")) {
      const [family = "", type = ""] = line.slice("# TYPE ".length).split(" ")
      types.set(family, [...(types.get(family) ?? []), type])
      continue
    }
    if (line.startsWith("#")) continue
    const match = SAMPLE.exec(line)
    if (match === null) {
      garbage.push(line)
      continue
    }
    const key = seriesKey(match[1]!, match[2])
    samples.set(key, [...(samples.get(key) ?? []), Number(match[3])])
  }
  return { samples, types, garbage }
}

const scrape = async (relay: RelayProcess): Promise<Scrape> => {
  const response = await fetch(relay.metricsUrl)
  const text = await response.text()
  return { status: response.status, contentType: response.headers.get("content-type"), text, ...parse(text) }
}

interface Health {
  readonly connected_binaries: number
  readonly connected_phones: number
}
const health = async (relay: RelayProcess): Promise<Health> =>
  (await (await fetch(`${relay.httpUrl}/healthz`)).json()) as Health

/** A scrape as a plain object, duplicates kept visible, for readable diffs. */
const asObject = (samples: Map<string, Array<number>>) =>
  Object.fromEntries([...samples].sort(([a], [b]) => a.localeCompare(b)).map(([k, vs]) => [k, vs.length === 1 ? vs[0] : vs]))

const matches = (samples: Map<string, Array<number>>, want: Map<string, number>): boolean => {
  if (samples.size !== want.size) return false
  for (const [series, value] of want) {
    const got = samples.get(series)
    if (got === undefined || got.length !== 1 || got[0] !== value) return false
  }
  return true
}

/**
 * The exact state one relay's `/metrics` must reach: every series at 0 from boot, plus what the
 * test drove. Also carries the peer data the test used, none of which may ever show in a scrape.
 */
class Expected {
  readonly values = new Map<string, number>(ALL_SERIES.map((s) => [s, 0]))
  /** Server-ids, conn_ids, tokens, device names, user agents, versions, the client IP. */
  readonly peerData = new Set<string>(["127.0.0.1"])
  readonly relay: RelayProcess
  private n = 0
  constructor(relay: RelayProcess) {
    this.relay = relay
  }

  /** A fresh server-id, remembered as peer data. */
  sid(): string {
    const id = `mx-sid-${process.pid}-${++this.n}-${Math.random().toString(36).slice(2, 8)}`
    this.peerData.add(id)
    return id
  }

  add(series: string, n = 1): this {
    const now = this.values.get(series)
    if (now === undefined) throw new Error(`not a SPEC series: ${series}`)
    this.values.set(series, now + n)
    return this
  }

  set(series: string, value: number): this {
    if (!this.values.has(series)) throw new Error(`not a SPEC series: ${series}`)
    this.values.set(series, value)
    return this
  }

  get(series: string): number {
    return this.values.get(series)!
  }

  /** Whether a scrape plus `/healthz` are exactly the expected state. */
  private async check(): Promise<{ ok: boolean; scrape: Scrape; health: Health }> {
    const [got, h] = await Promise.all([scrape(this.relay), health(this.relay)])
    const ok = matches(got.samples, this.values) &&
      h.connected_binaries === this.get(S.binaries) &&
      h.connected_phones === this.get(S.phones)
    return { ok, scrape: got, health: h }
  }

  private assertOk(last: { scrape: Scrape; health: Health }) {
    expect(asObject(last.scrape.samples)).toEqual(Object.fromEntries([...this.values].sort(([a], [b]) => a.localeCompare(b))))
    // SPEC §3.5: the gauges and /healthz are the same numbers.
    expect({ binaries: last.health.connected_binaries, phones: last.health.connected_phones })
      .toEqual({ binaries: this.get(S.binaries), phones: this.get(S.phones) })
    this.assertClean(last.scrape)
  }

  /** No label value, HELP text or anything else in the exposition is peer data. */
  assertClean(got: Scrape) {
    for (const secret of this.peerData) expect(got.text, `peer data in the scrape: ${secret}`).not.toContain(secret)
    expect(got.garbage).toEqual([])
    for (const noise of ["target_info", "otel_scope"]) expect(got.text).not.toContain(noise)
    for (const [series, values] of got.samples) expect(values.length, `series written twice: ${series}`).toBe(1)
  }

  /** Polls until the relay's metrics (and /healthz) are exactly the expected state. */
  async settle(timeoutMs = 5000): Promise<Scrape> {
    let last: { ok: boolean; scrape: Scrape; health: Health } | undefined
    try {
      await eventually(async () => (last = await this.check()).ok, timeoutMs)
    } catch {
      // Fall through: the assertion below shows the diff.
    }
    if (last === undefined) last = await this.check()
    this.assertOk(last)
    return last.scrape
  }

  /** The expected state holds on every scrape for `ms` (nothing increments late). */
  async holds(ms: number): Promise<void> {
    const until = Date.now() + ms
    do {
      this.assertOk(await this.check())
      await sleep(50)
    } while (Date.now() < until)
  }
}

// --- peers carrying recognisable peer data -----------------------------------------------------

const nonce = `${process.pid}${Math.random().toString(36).slice(2, 8)}`
const TOKEN = `mx-token-${nonce}`
const DEVICE = `mx-device-${nonce}`
const UA_BINARY = `mx-ua-binary-${nonce}`
const UA_PHONE = `mx-ua-phone-${nonce}`
const VERSION = `mx-version-${nonce}`
const PEER_HEADERS = [TOKEN, DEVICE, UA_BINARY, UA_PHONE, VERSION]

const binaryHeaders = (serverId: string) => ({
  "X-Pyrycode-Server": serverId,
  "X-Pyrycode-Version": VERSION,
  "User-Agent": UA_BINARY
})
const phoneHeaders = (serverId: string) => ({
  "X-Pyrycode-Server": serverId,
  "X-Pyrycode-Token": TOKEN,
  "X-Pyrycode-Device-Name": DEVICE,
  "User-Agent": UA_PHONE
})

const newExpected = (relay: RelayProcess): Expected => {
  const m = new Expected(relay)
  for (const value of PEER_HEADERS) m.peerData.add(value)
  return m
}

const binary = (m: Expected, serverId: string, silent = false): Promise<Peer> =>
  dialBinary(m.relay.url, serverId, {
    headers: binaryHeaders(serverId),
    ...(silent ? { wsOptions: { autoPong: false } } : {})
  })
const phone = (m: Expected, serverId: string): Promise<Peer> =>
  dialPhone(m.relay.url, serverId, { headers: phoneHeaders(serverId) })

const bytes = (text: string) => Buffer.byteLength(text, "utf8")

/** Phone sends `frame`; waits for the binary to get it; counts it; returns the envelope's conn_id. */
const phoneSends = async (m: Expected, from: Peer, to: Peer, frame: string): Promise<string> => {
  const index = to.messages.length
  from.send(frame)
  await to.waitFor(index + 1)
  const envelope = to.messages[index]!
  const connId = (JSON.parse(envelope) as { conn_id: string }).conn_id
  m.peerData.add(connId)
  m.add(S.forwarded("phone_to_binary")).add(S.bytes("phone_to_binary"), bytes(envelope))
  return connId
}

/** Binary sends `frame` to `connId`; waits for the phone to get it; counts it. */
const binarySends = async (m: Expected, from: Peer, to: Peer, connId: string, frame: string): Promise<void> => {
  const index = to.messages.length
  from.send(`{"conn_id":"${connId}","frame":${frame}}`)
  await to.waitFor(index + 1)
  expect(to.messages[index]).toBe(frame)
  m.add(S.forwarded("binary_to_phone")).add(S.bytes("binary_to_phone"), bytes(frame))
}

// ================================================================================================

describe("a fresh relay, before any traffic", () => {
  let relay: RelayProcess
  let m: Expected
  beforeAll(async () => {
    relay = await startRelay()
    m = newExpected(relay)
  })
  afterAll(async () => {
    await relay.stop()
  })

  it("shows every SPEC series exactly once, at 0, with its TYPE, and nothing else", async () => {
    const first = await scrape(relay)
    expect(first.status).toBe(200)
    expect(first.contentType).toBe("text/plain; version=0.0.4; charset=utf-8")
    // No polling here: the series exist from boot, not after a first update.
    expect(asObject(first.samples)).toEqual(Object.fromEntries(ALL_SERIES.map((s) => [s, 0])))
    m.assertClean(first)

    const families = new Map<string, string>([
      ...COUNTERS.map((s) => [familyOf(s), "counter"] as const),
      ...GAUGES.map((s) => [s, "gauge"] as const)
    ])
    expect(Object.fromEntries(first.types)).toEqual(Object.fromEntries([...families].map(([f, t]) => [f, [t]])))
    for (const noise of ["target_info", "otel_scope", "# UNIT", "_total_total", "service_name"]) {
      expect(first.text).not.toContain(noise)
    }
    await m.settle()
  })

  it("has all 12 ws_upgrade_attempts_total series from boot", async () => {
    const { samples } = await scrape(relay)
    const upgrades = [...samples.keys()].filter((s) => s.startsWith("pyrycode_relay_ws_upgrade_attempts_total{"))
    expect(upgrades.sort()).toEqual(
      (["server", "client"] as const).flatMap((e) => OUTCOMES.map((o) => S.upgrades(e, o))).sort()
    )
    expect(upgrades).toHaveLength(12)
    for (const series of upgrades) expect(samples.get(series), series).toEqual([0])
  })

  it("serves /metrics only on the metrics listener: 404 on the public one, and nothing but GET /metrics", async () => {
    const onPublic = await fetch(`${relay.httpUrl}/metrics`)
    expect(onPublic.status).toBe(404)
    expect(await onPublic.text()).not.toContain("pyrycode_relay_")
    const base = `http://127.0.0.1:${relay.metricsPort}`
    for (const path of ["/", "/metrics/", "/healthz", "/v1/server", "/metricsx"]) {
      expect((await fetch(`${base}${path}`)).status, path).toBe(404)
    }
    expect((await fetch(`${base}/metrics?x=1`)).status).toBe(200)
    // None of this is traffic: still all zero.
    await m.settle()
  })
})

// ================================================================================================

describe("frames forwarded, by direction", () => {
  let relay: RelayProcess
  let m: Expected
  beforeAll(async () => {
    relay = await startRelay()
    m = newExpected(relay)
  })
  afterAll(async () => {
    await relay.stop()
  })

  it("counts 3 phone→binary and 2 binary→phone frames, with their bytes, once per frame written", async () => {
    const serverId = m.sid()
    const b = await binary(m, serverId)
    m.add(S.upgrades("server", "accept")).set(S.binaries, 1)
    await m.settle()
    const p = await phone(m, serverId)
    m.add(S.upgrades("client", "accept")).set(S.phones, 1)
    await m.settle()

    const connId = await phoneSends(m, p, b, `{"seq":1}`)
    await phoneSends(m, p, b, `{"seq":2,"pad":"${"x".repeat(100)}"}`)
    await phoneSends(m, p, b, ` [3] `)
    expect(m.get(S.forwarded("phone_to_binary"))).toBe(3)
    const envelopeBytes = b.messages.reduce((sum, e) => sum + bytes(e), 0)
    expect(m.get(S.bytes("phone_to_binary"))).toBe(envelopeBytes)
    await m.settle()

    await binarySends(m, b, p, connId, `{"reply":1}`)
    await binarySends(m, b, p, connId, `"two"`)
    expect(m.get(S.forwarded("binary_to_phone"))).toBe(2)
    expect(m.get(S.bytes("binary_to_phone"))).toBe(bytes(`{"reply":1}`) + bytes(`"two"`))
    await m.settle()
    // Nothing trails in later.
    await m.holds(300)

    // The phone leaves on its own: the binary gets a close notice, which is not a frame.
    p.ws.close(4001)
    const notices = b.messages.length + 1
    await b.waitFor(notices)
    expect(envelopes(b).at(-1)).toEqual({ conn_id: connId, close_code: 4001 })
    m.set(S.phones, 0)
    await m.settle()
    b.ws.close()
    m.set(S.binaries, 0) // in grace: not connected
    await m.settle()
  })

  it("counts a directive's frame once it is written, and refuses (drops) frames addressed after it", async () => {
    const serverId = m.sid()
    const b = await binary(m, serverId)
    const p = await phone(m, serverId)
    m.add(S.upgrades("server", "accept")).add(S.upgrades("client", "accept")).add(S.binaries).add(S.phones)
    await m.settle()
    const connId = await phoneSends(m, p, b, `"hi"`)

    // Directive with a frame, then a frame after it (refused), in one write.
    b.send(`{"conn_id":"${connId}","frame":"bye","close_code":4000}\n`)
    b.send(`{"conn_id":"${connId}","frame":"too late"}`)
    expect(await p.closed).toEqual({ code: 4000, reason: "" })
    expect(p.messages).toEqual([`"bye"`])
    m.add(S.forwarded("binary_to_phone")).add(S.bytes("binary_to_phone"), bytes(`"bye"`))
    m.add(S.dropped("unknown_conn_id"))
    m.add(S.phones, -1)
    await m.settle()
    // Closed by the binary: no close notice, and nothing counted towards the binary.
    await m.holds(300)
    expect(envelopes(b).filter((e) => "close_code" in e)).toEqual([])

    // A directive without a frame writes nothing and counts nothing.
    const q = await phone(m, serverId)
    m.add(S.upgrades("client", "accept")).add(S.phones)
    const qId = await phoneSends(m, q, b, `"q"`)
    b.send(`{"conn_id":"${qId}","close_code":4002}`)
    expect(await q.closed).toEqual({ code: 4002, reason: "" })
    m.add(S.phones, -1)
    await m.settle()
    b.ws.close()
    m.add(S.binaries, -1)
    await m.settle()
  })
})

// ================================================================================================

describe("bytes forwarded are bytes on the wire", () => {
  let relay: RelayProcess
  let m: Expected
  beforeAll(async () => {
    relay = await startRelay()
    m = newExpected(relay)
  })
  afterAll(async () => {
    await relay.stop()
  })

  // The frames are JSON text; non-ASCII text is 2–4 bytes per character in UTF-8 (and 1–2 UTF-16
  // code units): `bytes_forwarded_total` must count what went over the socket.
  it("counts UTF-8 bytes, not string length, in both directions", async () => {
    const serverId = m.sid()
    const b = await binary(m, serverId)
    const p = await phone(m, serverId)
    m.add(S.upgrades("server", "accept")).add(S.upgrades("client", "accept")).set(S.binaries, 1).set(S.phones, 1)
    const frame = `"h\u00e9llo \u20ac \u{1f600}"`
    expect(bytes(frame)).not.toBe(frame.length)
    const connId = await phoneSends(m, p, b, frame)
    expect(envelopes(b)[0]!.frame).toBe("h\u00e9llo \u20ac \u{1f600}")
    await binarySends(m, b, p, connId, frame)
    await m.settle()
    p.ws.close()
    b.ws.close()
  })
})

// ================================================================================================

describe("frames not forwarded: no forwarded increment, one drop increment by reason", () => {
  let relay: RelayProcess
  let m: Expected
  beforeAll(async () => {
    relay = await startRelay(["--grace-period", "30s"])
    m = newExpected(relay)
  })
  afterAll(async () => {
    await relay.stop()
  })

  let b: Peer
  let serverId: string

  it("invalid JSON from a phone: the valid frames before it count, the invalid one is dropped", async () => {
    serverId = m.sid()
    b = await binary(m, serverId)
    const p = await phone(m, serverId)
    m.add(S.upgrades("server", "accept")).add(S.upgrades("client", "accept")).set(S.binaries, 1).set(S.phones, 1)
    await m.settle()
    await phoneSends(m, p, b, "1")
    await phoneSends(m, p, b, "2")
    p.send("{not json")
    expect((await p.closed).code).toBe(1000)
    m.add(S.dropped("invalid_json")).set(S.phones, 0)
    // The relay ended that session: the binary hears a close notice (not a frame).
    await eventually(() => envelopes(b).some((e) => e.close_code === 1001))
    await m.settle()
    await m.holds(200)
    expect(b.ws.readyState).toBe(b.ws.OPEN)
  })

  it("empty and whitespace-only phone messages are invalid JSON too", async () => {
    const p = await phone(m, serverId)
    m.add(S.upgrades("client", "accept")).add(S.phones)
    await m.settle()
    p.send("   ")
    expect((await p.closed).code).toBe(1000)
    m.add(S.dropped("invalid_json")).add(S.phones, -1)
    await m.settle()
  })

  it("malformed envelopes from the binary: dropped and counted, the binary stays connected", async () => {
    const malformed = [
      "not json",
      "[1,2]",
      `"just a string"`,
      `{"conn_id":5,"frame":1}`,
      `{"conn_id":"x","frame":1,"close_code":"4000"}`,
      `{"conn_id":"x","frame":1,"close_code":70000}`,
      `{"frame":1}`, // missing conn_id
      `{"conn_id":"","frame":1}`, // missing conn_id
      `{"conn_id":"client-x-00000000"}`, // missing frame
      `{"conn_id":"client-x-00000000","frame":null}` // missing frame
    ]
    for (const text of malformed) b.send(text)
    m.add(S.dropped("malformed_envelope"), malformed.length)
    await m.settle()
    // A push wake with no conn_id is not a frame and not a drop of a frame (push is off).
    b.send(`{"push_wake":{"platform":"fcm","token":"${TOKEN}-fcm"}}`)
    m.peerData.add(`${TOKEN}-fcm`)
    await sleep(200)
    await m.holds(200)

    // Still connected and still forwarding.
    const p = await phone(m, serverId)
    m.add(S.upgrades("client", "accept")).add(S.phones)
    const connId = await phoneSends(m, p, b, `"still here"`)
    await binarySends(m, b, p, connId, `"still here too"`)
    await m.settle()
    p.ws.close(1000)
    await eventually(() => envelopes(b).some((e) => e.conn_id === connId && e.close_code === 1000))
    m.add(S.phones, -1)
    await m.settle()
  })

  it("unknown conn_id: made up, another server-id's phone, a phone that left — each dropped once", async () => {
    const otherId = m.sid()
    const other = await binary(m, otherId)
    const theirs = await phone(m, otherId)
    m.add(S.upgrades("server", "accept")).add(S.upgrades("client", "accept")).add(S.binaries).add(S.phones)
    const theirConnId = await phoneSends(m, theirs, other, `"mine"`)

    const gone = await phone(m, serverId)
    m.add(S.upgrades("client", "accept")).add(S.phones)
    const goneId = await phoneSends(m, gone, b, `"bye"`)
    gone.ws.close(1000)
    await eventually(() => envelopes(b).some((e) => e.conn_id === goneId && e.close_code === 1000))
    m.add(S.phones, -1)
    await m.settle()

    b.send(`{"conn_id":"client-${serverId}-deadbeef","frame":1}`)
    b.send(`{"conn_id":"${theirConnId}","frame":"cross-tenant"}`) // never reaches another server-id
    b.send(`{"conn_id":"${goneId}","frame":"late"}`)
    m.add(S.dropped("unknown_conn_id"), 3)
    await m.settle()
    await m.holds(200)
    expect(theirs.messages).toEqual([])
    theirs.ws.close()
    other.ws.close()
    m.add(S.phones, -1).add(S.binaries, -1)
    await m.settle()
  })

  it("no binary: a phone frame during grace ends the session, is dropped as no_binary, and the gauge excludes the binary in grace", async () => {
    const graceId = m.sid()
    const gb = await binary(m, graceId)
    const p = await phone(m, graceId)
    m.add(S.upgrades("server", "accept")).add(S.upgrades("client", "accept")).add(S.binaries).add(S.phones)
    await m.settle()
    gb.ws.close()
    // In grace: the binary does not count as connected, its phone still does (SPEC §1.5, §3.4).
    m.add(S.binaries, -1)
    await m.settle()
    p.send(`"anyone there?"`)
    expect((await p.closed).code).toBe(1000)
    m.add(S.dropped("no_binary")).add(S.phones, -1)
    await m.settle()
    await m.holds(200)
  })

  it("promtool check metrics accepts a scrape taken after all this traffic", async () => {
    const { text } = await m.settle()
    expect(m.get(S.forwarded("phone_to_binary"))).toBeGreaterThan(0)
    const probe = spawnSync("promtool", ["--version"], { encoding: "utf8" })
    if (probe.error !== undefined) {
      console.warn("promtool not found on PATH: skipped the promtool check (only that one)")
      return
    }
    const check = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" })
    expect(check.status, `promtool: ${check.stdout}${check.stderr}`).toBe(0)
    // promtool prints lint findings (and exits 0 for some): the scrape must have none.
    expect(`${check.stdout}${check.stderr}`.trim()).toBe("")
  })
})

// ================================================================================================

describe("grace: reclaims, expiries, takeovers", () => {
  const GRACE_MS = 2000
  let relay: RelayProcess
  let m: Expected
  beforeAll(async () => {
    relay = await startRelay(["--grace-period", "2s", "--probe-timeout", "500ms"])
    m = newExpected(relay)
  })
  afterAll(async () => {
    await relay.stop()
  })

  it("a reclaim counts grace_reclaims +1, and grace_expiries stays 0 even after the old deadline", async () => {
    const serverId = m.sid()
    const first = await binary(m, serverId)
    const p = await phone(m, serverId)
    m.add(S.upgrades("server", "accept")).add(S.upgrades("client", "accept")).add(S.binaries).add(S.phones)
    await m.settle()
    const left = Date.now()
    first.ws.close()
    m.add(S.binaries, -1)
    await m.settle()
    const second = await binary(m, serverId)
    expect(await p.closed).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
    expect(Date.now() - left).toBeLessThan(GRACE_MS)
    m.add(S.upgrades("server", "accept")).add(S.graceReclaims).add(S.binaries).add(S.phones, -1)
    await m.settle()
    // Past the old deadline: the cancelled grace must not fire.
    await sleep(Math.max(0, left + GRACE_MS + 300 - Date.now()))
    await m.holds(500)
    expect(second.ws.readyState).toBe(second.ws.OPEN)
    second.ws.close()
    m.add(S.binaries, -1)
    await m.settle()
    // Its own grace then expires for real.
    m.add(S.graceExpiries)
    await m.settle(GRACE_MS + 3000)
  })

  it("a real expiry counts grace_expiries +1 and closes the phones 1000", async () => {
    const serverId = m.sid()
    const b = await binary(m, serverId)
    const p = await phone(m, serverId)
    m.add(S.upgrades("server", "accept")).add(S.upgrades("client", "accept")).add(S.binaries).add(S.phones)
    await m.settle()
    const left = Date.now()
    b.ws.close()
    m.add(S.binaries, -1)
    await m.settle()
    // Not before the deadline (which is at least `left + grace`)...
    await m.holds(Math.max(0, left + GRACE_MS - 300 - Date.now()))
    // ...then once.
    expect((await p.closed).code).toBe(1000)
    expect(Date.now() - left).toBeGreaterThanOrEqual(GRACE_MS - 100)
    m.add(S.graceExpiries).add(S.phones, -1)
    await m.settle()
    await m.holds(300)
  })

  it("a re-armed grace (reclaim, then leave again) expires only at the newest deadline, counted once", async () => {
    const serverId = m.sid()
    const first = await binary(m, serverId)
    m.add(S.upgrades("server", "accept")).add(S.binaries)
    await m.settle()
    const t0 = Date.now()
    first.ws.close()
    m.add(S.binaries, -1)
    await m.settle()
    await sleep(300)
    const second = await binary(m, serverId)
    m.add(S.upgrades("server", "accept")).add(S.graceReclaims).add(S.binaries)
    await m.settle()
    await sleep(Math.max(0, t0 + 1000 - Date.now()))
    const t1 = Date.now()
    second.ws.close()
    m.add(S.binaries, -1)
    await m.settle()
    // New phones may register during grace.
    const p = await phone(m, serverId)
    m.add(S.upgrades("client", "accept")).add(S.phones)
    await m.settle()

    // Between the old deadline (≤ t0 + grace) and the new one (≥ t1 + grace) nothing expires.
    await sleep(Math.max(0, t0 + GRACE_MS + 200 - Date.now()))
    const window = t1 + GRACE_MS - 200 - Date.now()
    expect(window).toBeGreaterThan(200)
    await m.holds(window)
    expect(p.ws.readyState).toBe(p.ws.OPEN)

    expect((await p.closed).code).toBe(1000)
    m.add(S.graceExpiries).add(S.phones, -1)
    await m.settle()
    await m.holds(300)
  })

  it("a takeover of a silent incumbent counts takeovers +1 and no reclaim or expiry", async () => {
    const serverId = m.sid()
    const incumbent = await binary(m, serverId, true)
    const p = await phone(m, serverId)
    m.add(S.upgrades("server", "accept")).add(S.upgrades("client", "accept")).add(S.binaries).add(S.phones)
    await m.settle()
    const newcomer = await binary(m, serverId)
    expect(await incumbent.closed).toEqual({ code: 1011, reason: "heartbeat timeout" })
    expect(await p.closed).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
    m.add(S.upgrades("server", "accept")).add(S.takeovers).add(S.phones, -1)
    await m.settle()
    // The displaced incumbent arms no grace: nothing changes past a whole grace period.
    await m.holds(GRACE_MS + 300)
    expect(newcomer.ws.readyState).toBe(newcomer.ws.OPEN)
    newcomer.ws.close()
    m.add(S.binaries, -1)
    await m.settle()
  })
})

// ================================================================================================

describe("upgrade outcomes and register failures, per endpoint", () => {
  let relay: RelayProcess
  let m: Expected
  beforeAll(async () => {
    relay = await startRelay(["--max-phones-per-server", "1"])
    m = newExpected(relay)
  })
  afterAll(async () => {
    await relay.stop()
  })

  it("accept, reject_headers, reject_409, reject_404, reject_429: one increment each, with the matching register failure", async () => {
    const serverId = m.sid()

    // server, reject_headers (each missing header is one decision)
    for (const name of ["X-Pyrycode-Server", "X-Pyrycode-Version", "User-Agent"]) {
      const headers: Record<string, string> = binaryHeaders(serverId)
      delete headers[name]
      expect(await upgradeStatus(`${relay.url}/v1/server`, headers)).toBe(400)
    }
    expect(await upgradeStatus(`${relay.url}/v1/server`, { ...binaryHeaders(serverId), "X-Pyrycode-Version": "" }))
      .toBe(400)
    m.add(S.upgrades("server", "reject_headers"), 4)
    await m.settle()

    // client, reject_headers
    const noToken: Record<string, string> = phoneHeaders(serverId)
    delete noToken["X-Pyrycode-Token"]
    expect(await upgradeStatus(`${relay.url}/v1/client`, noToken)).toBe(400)
    m.add(S.upgrades("client", "reject_headers"))
    await m.settle()

    // client, reject_404 ↔ no_server
    const early = await phone(m, serverId)
    expect(await early.closed).toEqual({ code: 4404, reason: "no server with that id" })
    m.add(S.upgrades("client", "reject_404")).add(S.registerFailures("no_server"))
    await m.settle()

    // server, accept
    const b = await binary(m, serverId)
    m.add(S.upgrades("server", "accept")).add(S.binaries)
    await m.settle()

    // server, reject_409 ↔ server_in_use (the incumbent answers the probe)
    const duplicate = await binary(m, serverId)
    expect(await duplicate.closed).toEqual({ code: 4409, reason: "server-id already claimed" })
    m.add(S.upgrades("server", "reject_409")).add(S.registerFailures("server_in_use"))
    await m.settle()

    // client, accept
    const p = await phone(m, serverId)
    m.add(S.upgrades("client", "accept")).add(S.phones)
    await m.settle()

    // client, reject_429 ↔ phones_at_cap (--max-phones-per-server 1)
    const second = await phone(m, serverId)
    expect(await second.closed).toEqual({ code: 4429, reason: "too many phones for server-id" })
    m.add(S.upgrades("client", "reject_429")).add(S.registerFailures("phones_at_cap"))
    await m.settle()

    // Not upgrade decisions of either endpoint: wrong path, no upgrade, a broken handshake.
    expect(await upgradeStatus(`${relay.url}/v1/server/`, binaryHeaders(serverId))).toBe(404)
    expect((await fetch(`${relay.httpUrl}/v1/client`, { headers: phoneHeaders(serverId) })).status).toBe(426)
    await m.holds(300)

    // The three combinations that stay 0 by construction.
    expect(m.get(S.upgrades("server", "reject_404"))).toBe(0)
    expect(m.get(S.upgrades("server", "reject_429"))).toBe(0)
    expect(m.get(S.upgrades("client", "reject_409"))).toBe(0)

    p.ws.close()
    b.ws.close()
    m.add(S.phones, -1).add(S.binaries, -1)
    await m.settle()
  })
})

describe("reject_rate_limit ↔ ratelimit, on both endpoints", () => {
  let relay: RelayProcess
  let m: Expected
  beforeAll(async () => {
    relay = await startRelay(["--rate-limit-burst", "1", "--rate-limit-refill", "1h"])
    m = newExpected(relay)
  })
  afterAll(async () => {
    await relay.stop()
  })

  it("counts one reject_rate_limit per refused request and the ratelimit failure with each", async () => {
    const serverId = m.sid()
    const b = await binary(m, serverId) // the one token
    m.add(S.upgrades("server", "accept")).add(S.binaries)
    await m.settle()

    expect(await upgradeStatus(`${relay.url}/v1/server`, binaryHeaders(m.sid()))).toBe(429)
    m.add(S.upgrades("server", "reject_rate_limit")).add(S.registerFailures("ratelimit"))
    await m.settle()
    expect(await upgradeStatus(`${relay.url}/v1/client`, phoneHeaders(serverId))).toBe(429)
    expect(await upgradeStatus(`${relay.url}/v1/client`, {})).toBe(429) // before the header gate
    m.add(S.upgrades("client", "reject_rate_limit"), 2).add(S.registerFailures("ratelimit"), 2)
    await m.settle()
    // /healthz and /metrics are not rate limited and count nothing.
    for (let i = 0; i < 3; i++) expect((await fetch(`${relay.httpUrl}/healthz`)).status).toBe(200)
    await m.holds(200)
    b.ws.close()
    m.add(S.binaries, -1)
    await m.settle()
  })
})

// ================================================================================================

describe("connections_rejected_total", () => {
  it("conn_cap: one per upgrade refused 503 at --max-connections 1, and no upgrade outcome", async () => {
    const relay = await startRelay(["--max-connections", "1"])
    const m = newExpected(relay)
    try {
      const serverId = m.sid()
      const b = await binary(m, serverId)
      m.add(S.upgrades("server", "accept")).add(S.binaries)
      await m.settle()
      expect(await upgradeStatus(`${relay.url}/v1/client`, phoneHeaders(serverId))).toBe(503)
      expect(await upgradeStatus(`${relay.url}/v1/server`, binaryHeaders(m.sid()))).toBe(503)
      m.add(S.rejected("conn_cap"), 2)
      await m.settle()
      await m.holds(200)
      b.ws.close()
      m.add(S.binaries, -1)
      await m.settle()
    } finally {
      await relay.stop()
    }
  })

  it("per_ip_cap: one per upgrade refused 503 at --max-connections-per-ip 1", async () => {
    const relay = await startRelay(["--max-connections-per-ip", "1"])
    const m = newExpected(relay)
    try {
      const serverId = m.sid()
      const b = await binary(m, serverId)
      m.add(S.upgrades("server", "accept")).add(S.binaries)
      await m.settle()
      expect(await upgradeStatus(`${relay.url}/v1/client`, phoneHeaders(serverId))).toBe(503)
      m.add(S.rejected("per_ip_cap"))
      await m.settle()
      await m.holds(200)
      b.ws.close()
      m.add(S.binaries, -1)
      await m.settle()
    } finally {
      await relay.stop()
    }
  })

  it("handshake_timeout: a request head that does not arrive in time is counted once", async () => {
    const relay = await startRelay(["--handshake-timeout", "500ms"])
    const m = newExpected(relay)
    try {
      const socket = Net.connect(relay.port, "127.0.0.1")
      socket.on("error", () => {})
      let answer = ""
      socket.on("data", (d: Buffer) => (answer += d.toString())) // flowing, so "close" can fire
      const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()))
      socket.write("GET /v1/server HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
      await closed
      expect(answer).toMatch(/^HTTP\/1\.1 408 /)
      m.add(S.rejected("handshake_timeout"))
      await m.settle()
      await m.holds(200)
    } finally {
      await relay.stop()
    }
  })
})

// ================================================================================================

describe("the metrics listener address", () => {
  it("refuses a non-loopback --metrics-listen before binding anything: exit 2, one line naming the flag", async () => {
    const addresses = ["0.0.0.0:9999", "10.1.2.3:9090", "localhost:9090", "[::]:9090"]
    const runs = await Promise.all(addresses.map(async (address) => {
      const port = await freePort()
      return [address, await runCli(["--listen", `127.0.0.1:${port}`, "--metrics-listen", address])] as const
    }))
    for (const [address, { code, stdout, stderr }] of runs) {
      expect(code, address).toBe(2)
      expect(stdout, address).toBe("")
      expect(stderr.trim().split("\n"), address).toHaveLength(1)
      expect(stderr, address).toContain("metrics-listen")
      expect(stderr, address).not.toContain("relay started")
    }
  })
})
