/**
 * Mini-Autobahn (SPEC §1.4, §5; RFC 6455 §5, §7.4): hand-built hostile frames over raw TCP, on
 * both endpoints of one relay process.
 *
 * For every case, on the phone endpoint (`/v1/client`, a real binary listening) and on the binary
 * endpoint (`/v1/server`, a real phone registered on the slot), we assert:
 *   - the relay sends a close frame with the RFC 6455 code (1002 protocol error / 1007 invalid
 *     payload data) and an empty reason, then half-closes (FIN) and the TCP connection ends;
 *   - nothing is forwarded: the binary gets only the close notice `{"conn_id","close_code":1001}`
 *     for a raw phone; the phone of a raw binary gets nothing (it is closed 1000 when the grace
 *     of 500 ms expires);
 *   - the relay process is alive, `/healthz` answers 200, and a fresh phone/binary pair works.
 * Hostile payloads are valid JSON / valid envelopes on purpose, so a relay that accepted the bad
 * frame would visibly forward it.
 */
import { upgradeHead } from "../../bench/lib/raw.ts"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { dialBinary, dialPhone, eventually, type Peer } from "../support/Peers.ts"
import {
  buildFrame,
  closeOutcome,
  type CloseOutcome,
  closePayload,
  OP,
  randomBytes,
  rawDial,
  rawHttp,
  type RawPeer,
  rssBytes
} from "../support/RawFrames.ts"
import { type RelayProcess, startRelay } from "../support/RelayProcess.ts"
import { startRelayPatiently } from "../support/RawFrames.ts"

const MESSAGE_TIMEOUT_S = 10

let relay: RelayProcess
let n = 0
const sid = (tag: string) => `hostile-${tag}-${process.pid}-${++n}`

beforeAll(async () => {
  relay = await startRelayPatiently(startRelay, ["--grace-period", "500ms", "--message-timeout", `${MESSAGE_TIMEOUT_S}s`])
}, 60_000)

afterAll(async () => {
  await relay?.stop()
})

const phoneHeaders = (serverId: string) => ({
  "X-Pyrycode-Server": serverId,
  "X-Pyrycode-Token": "hostile-token",
  "User-Agent": "hostile-phone"
})
const binaryHeaders = (serverId: string) => ({
  "X-Pyrycode-Server": serverId,
  "X-Pyrycode-Version": "hostile-1",
  "User-Agent": "hostile-binary"
})

const health = async () => {
  const res = await fetch(`${relay.httpUrl}/healthz`)
  return { status: res.status, body: (await res.json()) as Record<string, number> }
}

/** The relay process is alive, `/healthz` is 200, and a fresh pair routes both ways. */
const expectRelayHealthy = async () => {
  expect(relay.child.exitCode).toBeNull()
  expect(relay.child.signalCode).toBeNull()
  expect((await health()).status).toBe(200)
  const serverId = sid("fresh")
  const binary = await dialBinary(relay.url, serverId)
  const phone = await dialPhone(relay.url, serverId)
  phone.send(`{"fresh":true}`)
  const [envelope] = await binary.waitFor(1, 10_000)
  const parsed = JSON.parse(envelope!) as { conn_id: string; frame: unknown }
  expect(parsed.frame).toEqual({ fresh: true })
  binary.send(JSON.stringify({ conn_id: parsed.conn_id, frame: { back: 1 } }))
  expect(await phone.waitFor(1, 10_000)).toEqual([`{"back":1}`])
  phone.ws.close()
  await phone.closed
  binary.ws.close()
  await binary.closed
}

interface Ctx {
  /** The conn_id of the phone on the slot (binary-endpoint runs), for payloads that look routable. */
  readonly connId: string
}

interface Case {
  readonly name: string
  readonly frames: (ctx: Ctx) => Array<Buffer>
  readonly code: number
}

/** A payload that would be forwarded if the frame were accepted: a phone frame or a routable envelope. */
const bait = (ctx: Ctx) => JSON.stringify({ conn_id: ctx.connId, frame: { leaked: true } })

const INVALID_UTF8_CASES: Array<Case> = [
  {
    name: "invalid UTF-8 in a text frame",
    frames: (ctx) => [buildFrame({ opcode: OP.text, payload: Buffer.concat([Buffer.from(bait(ctx).slice(0, -1)), Buffer.from([0xc3, 0x28]), Buffer.from("}")]) })],
    code: 1007
  },
  {
    name: "invalid UTF-8 (a lone 0xFF) in a text frame",
    frames: () => [buildFrame({ opcode: OP.text, payload: Buffer.from([0x22, 0xff, 0x22]) })],
    code: 1007
  },
  {
    name: "UTF-8-encoded surrogate (CESU) in a text frame",
    frames: () => [buildFrame({ opcode: OP.text, payload: Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22]) })],
    code: 1007
  },
  {
    name: "invalid UTF-8 split across two fragments (sequence broken at the seam)",
    frames: (ctx) => {
      const text = bait(ctx)
      return [
        // "…€" truncated: E2 82 at the end of fragment 1, then 0x28 ("(") instead of 0xAC.
        buildFrame({ opcode: OP.text, fin: false, payload: Buffer.concat([Buffer.from(text.slice(0, 10)), Buffer.from([0xe2, 0x82])]) }),
        buildFrame({ opcode: OP.continuation, fin: true, payload: Buffer.concat([Buffer.from([0x28]), Buffer.from(text.slice(10))]) })
      ]
    },
    code: 1007
  },
  {
    name: "invalid UTF-8 in the second of two fragments",
    frames: () => [
      buildFrame({ opcode: OP.text, fin: false, payload: `"valid start ` }),
      buildFrame({ opcode: OP.continuation, fin: true, payload: Buffer.from([0x80, 0x80, 0x22]) })
    ],
    code: 1007
  },
  {
    name: "invalid UTF-8 in a close frame reason",
    frames: () => [buildFrame({ opcode: OP.close, payload: closePayload(1000, Buffer.from([0xff, 0xfe])) })],
    code: 1007
  }
]

const PROTOCOL_CASES: Array<Case> = [
  { name: "unmasked client frame", frames: (ctx) => [buildFrame({ opcode: OP.text, payload: bait(ctx), mask: false })], code: 1002 },
  { name: "RSV1 set (no extension negotiated)", frames: (ctx) => [buildFrame({ opcode: OP.text, payload: bait(ctx), rsv1: true })], code: 1002 },
  { name: "RSV2 set", frames: (ctx) => [buildFrame({ opcode: OP.text, payload: bait(ctx), rsv2: true })], code: 1002 },
  { name: "RSV3 set", frames: (ctx) => [buildFrame({ opcode: OP.text, payload: bait(ctx), rsv3: true })], code: 1002 },
  { name: "RSV1 on a ping", frames: () => [buildFrame({ opcode: OP.ping, payload: "p", rsv1: true })], code: 1002 },
  { name: "reserved data opcode 0x3", frames: (ctx) => [buildFrame({ opcode: 0x3, payload: bait(ctx) })], code: 1002 },
  { name: "reserved control opcode 0xB", frames: (ctx) => [buildFrame({ opcode: 0xb, payload: bait(ctx).slice(0, 100) })], code: 1002 },
  { name: "reserved opcode 0xF", frames: () => [buildFrame({ opcode: 0xf, payload: "1" })], code: 1002 },
  { name: "ping with a 126-byte payload (control frame > 125)", frames: () => [buildFrame({ opcode: OP.ping, payload: Buffer.alloc(126, 0x61) })], code: 1002 },
  { name: "close with a 200-byte payload (control frame > 125)", frames: () => [buildFrame({ opcode: OP.close, payload: closePayload(1000, "r".repeat(198)) })], code: 1002 },
  { name: "fragmented ping (FIN=0)", frames: () => [buildFrame({ opcode: OP.ping, fin: false, payload: "half" })], code: 1002 },
  {
    name: "fragmented ping inside a fragmented text message",
    frames: (ctx) => [
      buildFrame({ opcode: OP.text, fin: false, payload: bait(ctx).slice(0, 5) }),
      buildFrame({ opcode: OP.ping, fin: false, payload: "half" })
    ],
    code: 1002
  },
  { name: "continuation frame with no message started", frames: (ctx) => [buildFrame({ opcode: OP.continuation, payload: bait(ctx) })], code: 1002 },
  {
    name: "new text frame while a fragmented message is open",
    frames: (ctx) => [
      buildFrame({ opcode: OP.text, fin: false, payload: "[" }),
      buildFrame({ opcode: OP.text, payload: bait(ctx) })
    ],
    code: 1002
  },
  { name: "close with invalid code 999", frames: () => [buildFrame({ opcode: OP.close, payload: closePayload(999) })], code: 1002 },
  { name: "close with invalid code 1005", frames: () => [buildFrame({ opcode: OP.close, payload: closePayload(1005) })], code: 1002 },
  { name: "close with invalid code 1006", frames: () => [buildFrame({ opcode: OP.close, payload: closePayload(1006) })], code: 1002 },
  { name: "close with invalid code 5000", frames: () => [buildFrame({ opcode: OP.close, payload: closePayload(5000) })], code: 1002 },
  { name: "close with invalid code 1004 (reserved)", frames: () => [buildFrame({ opcode: OP.close, payload: closePayload(1004) })], code: 1002 },
  { name: "close with invalid code 2999", frames: () => [buildFrame({ opcode: OP.close, payload: closePayload(2999) })], code: 1002 },
  { name: "close with a 1-byte payload", frames: () => [buildFrame({ opcode: OP.close, payload: Buffer.from([0x03]) })], code: 1002 }
]

/** A raw phone against a real binary: the hostile frames, then the outcome on both sides. */
const runOnPhoneEndpoint = async (c: Case) => {
  const serverId = sid("p")
  const binary = await dialBinary(relay.url, serverId)
  const dialed = await rawDial(relay.port, "/v1/client", phoneHeaders(serverId))
  expect(dialed.status).toBe(101)
  const raw = dialed.peer!
  for (const f of c.frames({ connId: "unused" })) await raw.write(f)
  const outcome = await closeOutcome(raw)
  // The phone's connection ended on its own: the binary hears exactly one close notice, 1001 (§2.4),
  // and no frame.
  await eventually(() => binary.messages.length >= 1, 10_000)
  expect(binary.messages).toHaveLength(1)
  const notice = JSON.parse(binary.messages[0]!) as Record<string, unknown>
  expect(Object.keys(notice)).toEqual(["conn_id", "close_code"])
  expect(notice.conn_id).toMatch(new RegExp(`^client-${serverId}-[0-9a-f]{8}$`))
  expect(notice.close_code).toBe(1001)
  binary.ws.close()
  await binary.closed
  return outcome
}

/** A raw binary with a real phone on its slot; the phone must receive nothing. */
const runOnBinaryEndpoint = async (c: Case) => {
  const serverId = sid("b")
  const dialed = await rawDial(relay.port, "/v1/server", binaryHeaders(serverId))
  expect(dialed.status).toBe(101)
  const raw = dialed.peer!
  const phone = await dialPhone(relay.url, serverId)
  phone.send(`{"hello":1}`)
  const envelope = await raw.waitFrame((f) => f.opcode === OP.text, 10_000)
  expect(envelope).toBeDefined()
  const connId = (JSON.parse(envelope!.payload.toString()) as { conn_id: string }).conn_id
  const mark = raw.frames.length
  for (const f of c.frames({ connId })) await raw.write(f)
  const outcome = await closeOutcome(raw, 15_000, mark)
  // Nothing reached the phone; the slot went into grace (500 ms) and its expiry closed the phone 1000.
  const closed = await Promise.race([phone.closed, new Promise<undefined>((r) => setTimeout(() => r(undefined), 15_000))])
  expect(closed?.code).toBe(1000)
  expect(phone.messages).toEqual([])
  return outcome
}

const expectClosedWith = (outcome: CloseOutcome, code: number) => {
  // ws answers a framing error with a close frame carrying the RFC code and no reason, then FIN.
  expect(outcome.closeFrame).toEqual({ code, reason: "", length: 2 })
  expect(outcome.otherFrames.filter((f) => f.opcode !== OP.pong)).toEqual([])
  expect(outcome.relayEnded).toBe(true)
  expect(outcome.tcpClosed).toBe(true)
}

describe("hostile frames close with the RFC 6455 code, forward nothing, and leave the relay healthy", () => {
  for (const c of [...PROTOCOL_CASES, ...INVALID_UTF8_CASES]) {
    it(`${c.name} → ${c.code}`, async () => {
      const [phoneSide, binarySide] = await Promise.all([runOnPhoneEndpoint(c), runOnBinaryEndpoint(c)])
      expectClosedWith(phoneSide, c.code)
      expectClosedWith(binarySide, c.code)
      await expectRelayHealthy()
    }, 60_000)
  }
})

describe("controls: legal but unusual framing is accepted", () => {
  it("a valid close is echoed; data the phone sends after its close frame is not forwarded", async () => {
    const serverId = sid("okclose")
    const binary = await dialBinary(relay.url, serverId)
    const raw = (await rawDial(relay.port, "/v1/client", phoneHeaders(serverId))).peer!
    await raw.write(Buffer.concat([
      buildFrame({ opcode: OP.close, payload: closePayload(4000, "bye") }),
      buildFrame({ opcode: OP.text, payload: `{"after":"close"}` })
    ]))
    const outcome = await closeOutcome(raw)
    expect(outcome.closeFrame?.code).toBe(4000)
    expect(outcome.tcpClosed).toBe(true)
    await eventually(() => binary.messages.length >= 1, 10_000)
    expect(binary.messages.map((m) => JSON.parse(m) as Record<string, unknown>)).toEqual([
      { conn_id: expect.stringMatching(/^client-/), close_code: 4000 }
    ])
    binary.ws.close()
  })

  it("a multi-byte character split across fragments, with a ping between them, is delivered intact", async () => {
    const serverId = sid("ok")
    const binary = await dialBinary(relay.url, serverId)
    const raw = (await rawDial(relay.port, "/v1/client", phoneHeaders(serverId))).peer!
    const euro = Buffer.from(`{"price":"€10","k":"𝄞"}`)
    const cut = euro.indexOf(0xe2) + 1 // inside the 3-byte "€"
    const cut2 = euro.indexOf(0xf0) + 2 // inside the 4-byte "𝄞"
    await raw.write(Buffer.concat([
      buildFrame({ opcode: OP.text, fin: false, payload: euro.subarray(0, cut) }),
      buildFrame({ opcode: OP.ping, payload: "mid" }),
      buildFrame({ opcode: OP.continuation, fin: false, payload: euro.subarray(cut, cut2), mask: Buffer.from([0, 0, 0, 0]) }),
      buildFrame({ opcode: OP.continuation, fin: true, payload: euro.subarray(cut2) })
    ]))
    const [envelope] = await binary.waitFor(1, 10_000)
    expect(JSON.parse(envelope!).frame).toEqual({ price: "€10", k: "𝄞" })
    const pong = await raw.waitFrame((f) => f.opcode === OP.pong, 10_000)
    expect(pong?.payload.toString()).toBe("mid")
    raw.socket.destroy()
    binary.ws.close()
  })
})

/**
 * 200 000 one-byte fragments of one message. ws 8 caps a message at 16 384 fragments
 * (`maxFragments`) and closes 1008 on the 16 385th.
 */
describe("fragment flood", () => {
  const FRAGMENTS = 200_000
  const first = buildFrame({ opcode: OP.text, fin: false, payload: "\"" })
  const cont = buildFrame({ opcode: OP.continuation, fin: false, payload: "a" })

  it("paced with pings: closed 1008 exactly at the fragment cap, on both endpoints", async () => {
    const BATCH = 1000
    const run = async (path: "/v1/client" | "/v1/server") => {
      const serverId = sid("frag")
      const binary = path === "/v1/client" ? await dialBinary(relay.url, serverId) : undefined
      const headers = path === "/v1/client" ? phoneHeaders(serverId) : binaryHeaders(serverId)
      const raw = (await rawDial(relay.port, path, headers)).peer!
      await raw.write(first)
      let sent = 1
      let lastPonged = 0
      const batchBuf = Buffer.concat(Array.from({ length: BATCH }, () => cont))
      while (sent < FRAGMENTS && !raw.isClosed()) {
        const batch = sent / BATCH | 0
        // Control frames may be interleaved with fragments (RFC 6455 §5.4): the pong proves the
        // relay has parsed every fragment before it.
        await raw.write(Buffer.concat([batchBuf, buildFrame({ opcode: OP.ping, payload: `b${batch}` })]))
        sent += BATCH
        const answer = await raw.waitFrame((f) => (f.opcode === OP.pong && f.payload.toString() === `b${batch}`) || f.opcode === OP.close, 15_000)
        if (answer === undefined || answer.opcode === OP.close) break
        lastPonged = sent
      }
      const outcome = await closeOutcome(raw)
      if (binary !== undefined) {
        await eventually(() => binary.messages.length >= 1, 10_000)
        expect(binary.messages.map((m) => Object.keys(JSON.parse(m) as object))).toEqual([["conn_id", "close_code"]])
        binary.ws.close()
      }
      return { outcome, lastPonged, sent }
    }
    const results = await Promise.all([run("/v1/client"), run("/v1/server")])
    for (const { outcome, lastPonged, sent } of results) {
      // ws closes with 1008 (policy violation) and no reason; the message deadline would say "message timeout".
      expect(outcome.closeFrame).toEqual({ code: 1008, reason: "", length: 2 })
      expect(outcome.tcpClosed).toBe(true)
      // Every fragment up to the cap was accepted (ponged); the batch crossing 16 384 was the last.
      expect(lastPonged).toBe(16_001)
      expect(sent).toBe(17_001)
    }
    await expectRelayHealthy()
  }, 120_000)

  it("200 000 fragments in one burst: closed 1008, relay RSS bounded, process alive", async () => {
    const pid = relay.child.pid!
    const before = await rssBytes(pid)
    const blast = Buffer.concat([first, ...Array.from({ length: FRAGMENTS - 1 }, () => cont)])
    const outcomes = await Promise.all((["/v1/client", "/v1/server"] as const).flatMap((path) =>
      [0, 1].map(async () => {
        const serverId = sid("blast")
        const headers = path === "/v1/client" ? phoneHeaders(serverId) : binaryHeaders(serverId)
        const binary = path === "/v1/client" ? await dialBinary(relay.url, serverId) : undefined
        const raw = (await rawDial(relay.port, path, headers)).peer!
        void raw.write(blast)
        const outcome = await closeOutcome(raw, 30_000)
        binary?.ws.close()
        return outcome
      })
    ))
    for (const outcome of outcomes) {
      expect(outcome.closeFrame).toEqual({ code: 1008, reason: "", length: 2 })
      expect(outcome.tcpClosed).toBe(true)
    }
    const after = await rssBytes(pid)
    console.log(`relay RSS before ${(before / 2 ** 20).toFixed(1)} MiB, after 4 × 200 000 fragments ${(after / 2 ** 20).toFixed(1)} MiB`)
    expect(after - before).toBeLessThan(64 * 1024 * 1024)
    await expectRelayHealthy()
  }, 120_000)
})

describe("ping flood from a peer that never reads", () => {
  it("is cut off (ws terminates after 60 unflushed auto-pongs: TCP close, no close frame), RSS bounded", async () => {
    const pid = relay.child.pid!
    const before = await rssBytes(pid)
    const ping = buildFrame({ opcode: OP.ping, payload: Buffer.alloc(125, 0x70) })
    const chunk = Buffer.concat(Array.from({ length: 1000 }, () => ping))
    const run = async (path: "/v1/client" | "/v1/server") => {
      const serverId = sid("pingflood")
      const binary = path === "/v1/client" ? await dialBinary(relay.url, serverId) : undefined
      const headers = path === "/v1/client" ? phoneHeaders(serverId) : binaryHeaders(serverId)
      const raw = (await rawDial(relay.port, path, headers)).peer!
      raw.socket.pause() // never read: the relay's pongs pile up
      let sent = 0
      const started = Date.now()
      // 200 000 pings (26 MB) at most, with backpressure; the relay gives up long before.
      while (sent < 200_000 && !raw.isClosed() && Date.now() - started < 30_000) {
        const flushed = raw.socket.write(chunk)
        sent += 1000
        if (!flushed) {
          await Promise.race([new Promise((r) => raw.socket.once("drain", r)), raw.closed, new Promise((r) => setTimeout(r, 2000))])
        }
      }
      raw.socket.resume()
      const outcome = await closeOutcome(raw, 15_000)
      if (binary !== undefined) {
        await eventually(() => binary.messages.length >= 1, 10_000)
        expect(binary.messages.map((m) => JSON.parse(m) as Record<string, unknown>).map((e) => e.close_code)).toEqual([1001])
        binary.ws.close()
      }
      return { outcome, sent }
    }
    const results = await Promise.all([run("/v1/client"), run("/v1/server")])
    const after = await rssBytes(pid)
    console.log(`ping flood: cut off after ${results.map((r) => r.sent).join(" / ")} pings; RSS ${(before / 2 ** 20).toFixed(1)} → ${(after / 2 ** 20).toFixed(1)} MiB`)
    for (const { outcome, sent } of results) {
      expect(outcome.tcpClosed).toBe(true)
      expect(outcome.closeFrame).toBeUndefined()
      expect(sent).toBeLessThan(200_000)
    }
    expect(after - before).toBeLessThan(64 * 1024 * 1024)
    await expectRelayHealthy()
  }, 120_000)
})

describe("hostile upgrade requests", () => {
  const variants: Array<[string, Array<string>]> = [
    ["one 17 KiB header", [`X-Pad: ${"a".repeat(17 * 1024)}`]],
    ["64 KiB of headers", Array.from({ length: 64 }, (_, i) => `X-Pad-${i}: ${"b".repeat(1000)}`)],
    ["5000 tiny headers", Array.from({ length: 5000 }, (_, i) => `h${i}: v`)],
    ["5000 repeated X-Pyrycode-Server headers", Array.from({ length: 5000 }, () => "X-Pyrycode-Server: dup")]
  ]

  for (const [name, extra] of variants) {
    it(`${name}: 431 or closed, nothing registered`, async () => {
      const serverId = sid("hdr")
      for (const path of ["/v1/server", "/v1/client"]) {
        const headers = path === "/v1/server" ? binaryHeaders(serverId) : phoneHeaders(serverId)
        const res = await rawHttp(relay.port, upgradeHead(path, headers, extra), 15_000)
        expect(res.closedByRelay).toBe(true)
        if (res.status !== undefined) expect(res.status).toBe(431)
        expect(res.head).not.toContain("101")
      }
      // Nothing was claimed: a phone for that server-id finds no binary.
      const phone = await dialPhone(relay.url, serverId)
      expect((await phone.closed).code).toBe(4404)
      await expectRelayHealthy()
    }, 60_000)
  }
})

describe("random bytes after a valid upgrade", () => {
  const SEEDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
  const fixed: Array<[string, Buffer]> = [
    ["all zero bytes", Buffer.alloc(4096)],
    ["all 0xFF bytes", Buffer.alloc(4096, 0xff)],
    ["an HTTP request", Buffer.from("GET /v1/client HTTP/1.1\r\nHost: x\r\n\r\n")],
    ["a TLS ClientHello prefix", Buffer.from("1603010200010001fc0303", "hex")],
    ["a frame header announcing 2^63-1 bytes", Buffer.from([0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4])]
  ]
  const inputs: Array<[string, Buffer]> = [
    ...fixed,
    ...SEEDS.map((s): [string, Buffer] => [`seed ${s}`, randomBytes(s, 1 + (s * 997) % 8192)]),
    // A well-formed binary-opcode frame of random bytes, then random bytes: the parser gets past the
    // first header, so the garbage lands mid-stream.
    ...[201, 202, 203, 204].map((s): [string, Buffer] => [
      `framed seed ${s}`,
      Buffer.concat([buildFrame({ opcode: OP.binary, payload: randomBytes(s, 50 + (s * 131) % 400) }), randomBytes(s + 1000, 1 + (s * 17) % 200)])
    ]),
    ...[301, 302].map((s): [string, Buffer] => [
      `text frame of random bytes, seed ${s}`,
      buildFrame({ opcode: OP.text, payload: randomBytes(s, 300) })
    ])
  ]

  it(`${inputs.length} inputs × 2 endpoints: every connection closed, nothing forwarded, relay alive`, async () => {
    // At most 6 inputs (24 connections) at a time: under the default per-IP cap of 64 even when
    // a loaded machine makes the closes lag.
    const jobs = inputs.flatMap(([name, bytes]) =>
      (["/v1/client", "/v1/server"] as const).map((path) => async () => {
        const serverId = sid("rnd")
        let binary: Peer | undefined
        let phone: Peer | undefined
        let dialed: Awaited<ReturnType<typeof rawDial>>
        if (path === "/v1/client") {
          binary = await dialBinary(relay.url, serverId)
          dialed = await rawDial(relay.port, path, phoneHeaders(serverId))
        } else {
          dialed = await rawDial(relay.port, path, binaryHeaders(serverId))
          phone = await dialPhone(relay.url, serverId)
        }
        expect(dialed.status, dialed.head).toBe(101)
        const raw: RawPeer = dialed.peer!
        await raw.write(bytes)
        // A stream that stops inside a frame is closed by the message deadline (1008). A stream
        // that happens to end on a frame boundary may legitimately stay open: then it must still
        // be a working connection (answers a ping).
        const closedInTime = await Promise.race([
          raw.closed.then(() => true),
          new Promise<boolean>((r) => setTimeout(() => r(false), (MESSAGE_TIMEOUT_S + 5) * 1000))
        ])
        let stillOpenAndResponsive = false
        if (!closedInTime && raw.frames.every((f) => f.opcode !== OP.close)) {
          await raw.write(buildFrame({ opcode: OP.ping, payload: "alive?" }))
          const pong = await raw.waitFrame((f) => f.opcode === OP.pong && f.payload.toString() === "alive?", 10_000)
          stillOpenAndResponsive = pong !== undefined
          await raw.write(buildFrame({ opcode: OP.close, payload: closePayload(1000) }))
        }
        const outcome = await closeOutcome(raw, 15_000)
        if (binary !== undefined) {
          await eventually(() => binary.messages.length >= 1, 10_000)
          expect(binary.messages.every((m) => !("frame" in (JSON.parse(m) as object)))).toBe(true)
          binary.ws.close()
        }
        if (phone !== undefined) {
          await Promise.race([phone.closed, new Promise((r) => setTimeout(r, 15_000))])
          expect(phone.messages).toEqual([])
          phone.ws.close()
        }
        return { name, path, outcome, stillOpenAndResponsive }
      })
    )
    const results: Array<Awaited<ReturnType<(typeof jobs)[number]>>> = []
    for (let i = 0; i < jobs.length; i += 12) results.push(...await Promise.all(jobs.slice(i, i + 12).map((job) => job())))
    const summary = results.map((r) =>
      `${r.name} ${r.path}: ${r.stillOpenAndResponsive ? "open+pong, then " : ""}${r.outcome.closeFrame?.code ?? "tcp"} ${r.outcome.closeFrame?.reason ?? ""}`
    )
    console.log(`random bytes outcomes:\n  ${summary.join("\n  ")}`)
    for (const r of results) {
      expect(r.outcome.tcpClosed, `${r.name} on ${r.path}`).toBe(true)
      if (!r.stillOpenAndResponsive) expect(r.outcome.closeFrame, `${r.name} on ${r.path}`).toBeDefined()
    }
    await expectRelayHealthy()
  }, 120_000)
})

describe("after the whole barrage", () => {
  it("the relay is alive and every hostile connection left the registry", async () => {
    await expectRelayHealthy()
    await eventually(async () => {
      const { body } = await health()
      return body.connected_binaries === 0 && body.connected_phones === 0
    }, 15_000)
  })
})
