/**
 * Property-based hostile input against one relay process (SPEC §2, §2.3, §4.2, §5), with fast-check.
 *
 * Topology: server S has binary B and phones P1, P2; server S2 has binary B2 and phone Q (the
 * "other tenant"); server S3 has binary B3 for the close-code property, which dials a fresh phone
 * per run.
 *
 * (a) Whatever B sends — arbitrary bytes as binary frames, arbitrary text, arbitrary JSON, and
 *     generated envelopes with odd keys, types, escapes, duplicates and whitespace — B is never
 *     closed, the relay never crashes, and P1/P2 receive exactly what a spec oracle says was
 *     addressed to them, byte for byte and in order (a sentinel envelope per batch synchronises);
 *     Q never receives anything, even when addressed by its exact conn_id from the wrong binary.
 * (b) Arbitrary JSON sent by P1/P2 reaches B as `{"conn_id":<id>,"frame":<the phone's text verbatim>}`,
 *     per-phone in order, with `frame` deep-equal to what was sent; also deep nesting and big
 *     values up to the 256 KiB limit.
 * (c) Arbitrary close codes in directives: wire codes pass through, other integers 1..65535
 *     become 1011, 0 is no directive, non-integers and out-of-range values are malformed (dropped,
 *     phone stays open). Directive closes produce no close notice.
 *
 * Runs are bounded (numRuns + interruptAfterTimeLimit); a failure prints the fast-check seed.
 */
import fc from "fast-check"
import { isUtf8 } from "node:buffer"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { dialBinary, dialPhone, eventually, type Peer } from "../support/Peers.ts"
import { type RelayProcess, startRelay } from "../support/RelayProcess.ts"
import { startRelayPatiently } from "../support/RawFrames.ts"

const MAX_FRAME = 262_144
/** Per-property wall-clock budget: fast-check stops starting new runs after this (and counts it a pass). */
const TIME_BUDGET_MS = 20_000

let relay: RelayProcess
const tag = `${process.pid}`
const S = `props-s-${tag}`
const S2 = `props-s2-${tag}`
const S3 = `props-s3-${tag}`

let B: Peer
let B2: Peer
let B3: Peer
let P1: Peer
let P2: Peer
let Q: Peer
let P1_ID: string
let P2_ID: string
let Q_ID: string

/** Phone sends a hello; its binary tells us the conn_id the relay gave it. */
const learnConnId = async (binary: Peer, phone: Peer, marker: string): Promise<string> => {
  phone.send(JSON.stringify({ hello: marker }))
  let id: string | undefined
  await eventually(() => {
    for (const m of binary.messages) {
      const e = JSON.parse(m) as { conn_id?: string; frame?: { hello?: string } }
      if (e.frame?.hello === marker) id = e.conn_id
    }
    return id !== undefined
  }, 10_000)
  return id!
}

beforeAll(async () => {
  relay = await startRelayPatiently(startRelay, ["--grace-period", "2s"])
  B = await dialBinary(relay.url, S)
  P1 = await dialPhone(relay.url, S)
  P2 = await dialPhone(relay.url, S)
  B2 = await dialBinary(relay.url, S2)
  Q = await dialPhone(relay.url, S2)
  B3 = await dialBinary(relay.url, S3)
  P1_ID = await learnConnId(B, P1, "p1")
  P2_ID = await learnConnId(B, P2, "p2")
  Q_ID = await learnConnId(B2, Q, "q")
}, 60_000)

afterAll(async () => {
  for (const p of [P1, P2, Q, B, B2, B3]) p?.ws.close()
  await relay?.stop()
})

const expectRelayAlive = async () => {
  expect(relay.child.exitCode).toBeNull()
  expect(relay.child.signalCode).toBeNull()
  expect((await fetch(`${relay.httpUrl}/healthz`)).status).toBe(200)
}

const OPEN = 1

// ---------------------------------------------------------------------------------------------
// Spec oracle for one binary message (§2.2), written from SPEC, not from src/.
// ---------------------------------------------------------------------------------------------

type Verdict =
  | { readonly _tag: "Deliver"; readonly connId: string; readonly frame: unknown; readonly closeCode: number }
  | { readonly _tag: "Drop" }

const isPlainObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

const none = (u: unknown) => u === undefined || u === null

/**
 * `close_code: null` is read as absent, like `conn_id`/`frame` null: that is what the Go relay
 * does (JSON null into a Go int is a no-op) and what this relay does; SPEC §2.2 only says
 * "integer 0..65535" for the field's type.
 */
const oracle = (text: string | undefined): Verdict => {
  if (text === undefined) return { _tag: "Drop" }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return { _tag: "Drop" }
  }
  if (!isPlainObject(parsed)) return { _tag: "Drop" }
  const { conn_id: connId, close_code: closeCode, push_wake: pushWake, frame } = parsed
  if (!none(connId) && typeof connId !== "string") return { _tag: "Drop" }
  if (!none(closeCode) && !(typeof closeCode === "number" && Number.isInteger(closeCode) && closeCode >= 0 && closeCode <= 65535)) {
    return { _tag: "Drop" }
  }
  if (!none(pushWake) && !isPlainObject(pushWake)) return { _tag: "Drop" }
  if (none(connId) || connId === "") return { _tag: "Drop" } // wake (push off) or missing conn_id
  const code = none(closeCode) ? 0 : (closeCode as number)
  if (code === 0 && none(frame)) return { _tag: "Drop" }
  return { _tag: "Deliver", connId: connId as string, frame, closeCode: code }
}

// ---------------------------------------------------------------------------------------------
// (a) arbitrary binary → relay traffic
// ---------------------------------------------------------------------------------------------

interface BinaryMsg {
  /** What B sends. */
  readonly data: string | Buffer
  readonly binary: boolean
  /** For generated envelopes: the exact raw text of the frame value the phone must receive. */
  readonly rawFrame?: string
  readonly label: string
}

/** JSON string literal for `s`, each character escaped as \uXXXX with some probability (still the same string). */
const jsonStringLiteral = (s: string, escapeMask: ReadonlyArray<boolean>): string => {
  let out = "\""
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (escapeMask[i % Math.max(1, escapeMask.length)] === true) out += `\\u${c.toString(16).padStart(4, "0")}`
    else out += JSON.stringify(s[i]).slice(1, -1)
  }
  return out + "\""
}

const WS = fc.constantFrom("", " ", "\n", "\t", " \r\n  ")

const deepRaw = fc.record({
  depth: fc.integer({ min: 1, max: 20_000 }),
  kind: fc.constantFrom("array", "object", "mixed")
}).map(({ depth, kind }) => {
  if (kind === "array") return "[".repeat(depth) + "]".repeat(depth)
  if (kind === "object") return `{"k":`.repeat(depth) + "null" + "}".repeat(depth)
  return `[{"a":`.repeat(depth) + "[]" + "}]".repeat(depth)
})

const jsonValueArb = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  fc.jsonValue({ maxDepth: 3, stringUnit: "binary" }),
  fc.jsonValue({ maxDepth: 3, stringUnit: "grapheme" })
)

const loneSurrogates = fc.string({
  unit: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)),
  minLength: 1,
  maxLength: 4
})

/** A frame value as raw JSON text. */
const frameRawArb = fc.oneof(
  { weight: 6, arbitrary: jsonValueArb.map((v) => JSON.stringify(v)) },
  { weight: 1, arbitrary: loneSurrogates.map((s) => JSON.stringify({ s })) },
  { weight: 1, arbitrary: deepRaw },
  { weight: 1, arbitrary: fc.constantFrom("false", "0", "\"\"", "[]", "{}", "-0", "1e400", "12345678901234567890", "\"\\u0000\"", "\"\\\"}\"", "{\"frame\":{\"conn_id\":1}}") }
)

const envelopeArb = (ids: { p1: string; p2: string; q: string }) => {
  const ourPhone = fc.constantFrom(ids.p1, ids.p2)
  const otherTarget = fc.oneof(
    fc.constant(ids.q), // the other tenant's phone, addressed from the wrong binary
    fc.constantFrom(ids.p1.toUpperCase(), `${ids.p1} `, ` ${ids.p1}`, ids.p1.slice(0, -1), `${ids.p1}0`, `client-${S}-00000000`),
    fc.string({ maxLength: 40 })
  )
  // Close codes that must not close our phones: absent/null/0, or malformed (drops the whole envelope).
  const safeCode = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(undefined, "null", "0", "-0", "0.0") },
    { weight: 3, arbitrary: fc.constantFrom("1000.5", "-1", "65536", "70000", "\"1000\"", "true", "[]", "{}", "1e400", "-0.5") }
  )
  const anyCode = fc.oneof(safeCode, fc.integer({ min: 1, max: 65535 }).map(String))
  type ConnField = { readonly raw: (escapeMask: ReadonlyArray<boolean>) => string | undefined; readonly ours: boolean }
  const connField = fc.oneof(
    { weight: 5, arbitrary: ourPhone.map((id): ConnField => ({ raw: (m) => jsonStringLiteral(id, m), ours: true })) },
    { weight: 3, arbitrary: otherTarget.map((id): ConnField => ({ raw: (m) => jsonStringLiteral(id, m), ours: false })) },
    {
      weight: 2,
      arbitrary: fc.constantFrom(undefined, "null", "\"\"", "5", "true", "[]", "{}", `["${ids.p1}"]`)
        .map((raw): ConnField => ({ raw: () => raw, ours: false }))
    }
  )
  return fc.record({
    conn: connField,
    escapeMask: fc.array(fc.boolean(), { maxLength: 8 }),
    keyEscapes: fc.record({ conn: fc.boolean(), code: fc.boolean() }),
    // Up to 2 "frame" members (a duplicate key: the last wins), each spelt plainly or with \u escapes.
    frames: fc.array(fc.tuple(fc.option(frameRawArb, { nil: undefined }), fc.boolean()), { minLength: 1, maxLength: 2 }),
    frameNull: fc.boolean(),
    safe: safeCode,
    any: anyCode,
    pushWake: fc.oneof(
      { weight: 6, arbitrary: fc.constant(undefined) },
      { weight: 2, arbitrary: fc.constantFrom("null", `{"platform":"fcm","token":"t"}`) },
      { weight: 1, arbitrary: fc.constantFrom("\"fcm\"", "5", "[]") }
    ),
    extras: fc.array(
      fc.tuple(
        fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom("token", "Frame", "conn_id ", "__proto__", "constructor")),
        fc.oneof(jsonValueArb.map((v) => JSON.stringify(v)), fc.constant(`{"frame":"decoy","conn_id":"${ids.p2}"}`))
      ),
      { maxLength: 3 }
    ),
    order: fc.array(fc.nat(), { minLength: 8, maxLength: 8 }),
    ws: fc.tuple(WS, WS, WS)
  }).map((g): BinaryMsg => {
    const key = (name: string, escaped: boolean) => (escaped ? jsonStringLiteral(name, [true, false]) : JSON.stringify(name))
    const members: Array<string> = []
    const connRaw = g.conn.raw(g.escapeMask)
    if (connRaw !== undefined) members.push(`${key("conn_id", g.keyEscapes.conn)}:${g.ws[0]}${connRaw}`)
    let lastFrame: string | undefined
    for (const [f, escaped] of g.frames) {
      const raw = f ?? (g.frameNull ? "null" : undefined)
      if (raw === undefined) continue
      members.push(`${key("frame", escaped)}${g.ws[1]}:${g.ws[2]}${raw}`)
      lastFrame = raw
    }
    const code = g.conn.ours ? g.safe : g.any
    if (code !== undefined) members.push(`${key("close_code", g.keyEscapes.code)}:${code}`)
    if (g.pushWake !== undefined) members.push(`"push_wake":${g.pushWake}`)
    // Unknown extras go anywhere except after the last "frame" (they never shadow known keys:
    // "Frame" and "conn_id " are different keys).
    const extras = g.extras
      .filter(([k]) => !["conn_id", "frame", "close_code", "push_wake"].includes(k))
      .map(([k, v]) => `${JSON.stringify(k)}:${v}`)
    const all = [...members]
    extras.forEach((e, i) => all.splice(g.order[i]! % (all.length + 1), 0, e))
    const text = `${g.ws[0]}{${g.ws[1]}${all.join(`,${g.ws[2]}`)}${g.ws[0]}}${g.ws[2]}`
    const result: BinaryMsg = { data: text, binary: false, label: "envelope" }
    return lastFrame === undefined ? result : { ...result, rawFrame: lastFrame }
  })
}

/** What the generators give, within the message limit (a larger one is closed 1009: SPEC §1.4, not this property). */
const withinLimit = (m: BinaryMsg): boolean =>
  (typeof m.data === "string" ? Buffer.byteLength(m.data, "utf8") : m.data.length) <= MAX_FRAME

const binaryMsgArb = (ids: { p1: string; p2: string; q: string }): fc.Arbitrary<BinaryMsg> =>
  fc.oneof(
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 2048 }).map((b): BinaryMsg => ({ data: Buffer.from(b), binary: true, label: "bytes/binary" })) },
    {
      weight: 1,
      arbitrary: fc.uint8Array({ maxLength: 24 }).filter((b) => isUtf8(b)).map((b): BinaryMsg => ({
        data: Buffer.from(b),
        binary: false,
        label: "utf8-bytes/text"
      }))
    },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 400 }).map((s): BinaryMsg => ({ data: s, binary: false, label: "string/text" })) },
    { weight: 2, arbitrary: jsonValueArb.map((v): BinaryMsg => ({ data: JSON.stringify(v), binary: false, label: "json/text" })) },
    { weight: 1, arbitrary: jsonValueArb.map((v): BinaryMsg => ({ data: Buffer.from(JSON.stringify(v)), binary: true, label: "json/binary" })) },
    { weight: 8, arbitrary: envelopeArb(ids) },
    {
      weight: 2,
      arbitrary: envelopeArb(ids).map((m): BinaryMsg => ({ ...m, data: Buffer.from(m.data as string), binary: true, label: "envelope/binary" }))
    }
  ).filter(withinLimit)

describe("(a) arbitrary binary traffic", () => {
  it("never closes the binary, never crashes, delivers exactly what is addressed to each phone and nothing across tenants", async () => {
    const ids = { p1: P1_ID, p2: P2_ID, q: Q_ID }
    let batchNo = 0
    let delivered = 0
    const bBaseline = B.messages.length
    const b2Baseline = B2.messages.length
    const labels = new Map<string, number>()
    await fc.assert(
      fc.asyncProperty(fc.array(binaryMsgArb(ids), { minLength: 1, maxLength: 12 }), async (batch) => {
        const k = ++batchNo
        const marks = { p1: P1.messages.length, p2: P2.messages.length }
        const expected: Record<string, Array<{ raw?: string; value: unknown }>> = { [P1_ID]: [], [P2_ID]: [] }
        for (const msg of batch) {
          labels.set(msg.label, (labels.get(msg.label) ?? 0) + 1)
          const bytes = typeof msg.data === "string" ? Buffer.from(msg.data, "utf8") : msg.data
          // The relay reads a binary-opcode message that is not UTF-8 as "" (malformed): oracle sees no text.
          const asText = isUtf8(bytes) ? bytes.toString("utf8") : undefined
          const verdict = oracle(asText)
          if (verdict._tag === "Deliver" && (verdict.connId === P1_ID || verdict.connId === P2_ID)) {
            if (verdict.closeCode !== 0) throw new Error(`generator produced a directive for our phone: ${asText}`)
            expected[verdict.connId]!.push(msg.rawFrame === undefined ? { value: verdict.frame } : { raw: msg.rawFrame, value: undefined })
          }
          B.ws.send(msg.data, { binary: msg.binary })
        }
        const sentinel = (id: string) => `{"sentinel":${k},"to":"${id}"}`
        B.send(JSON.stringify({ conn_id: P1_ID, frame: JSON.parse(sentinel(P1_ID)) }))
        B.send(JSON.stringify({ conn_id: P2_ID, frame: JSON.parse(sentinel(P2_ID)) }))
        for (const [phone, id, mark] of [[P1, P1_ID, marks.p1], [P2, P2_ID, marks.p2]] as const) {
          await eventually(() => phone.messages.slice(mark).includes(sentinel(id)) || phone.ws.readyState !== OPEN, 15_000)
          expect(phone.ws.readyState, `phone ${id} must stay open`).toBe(OPEN)
          const got = phone.messages.slice(mark)
          expect(got[got.length - 1]).toBe(sentinel(id))
          const frames = got.slice(0, -1)
          const want = expected[id]!
          expect(frames.length, `frames delivered to ${id}`).toBe(want.length)
          frames.forEach((text, i) => {
            const w = want[i]!
            if (w.raw !== undefined) expect(text).toBe(w.raw)
            else expect(JSON.parse(text)).toEqual(w.value)
          })
          delivered += frames.length
        }
        expect(B.ws.readyState).toBe(OPEN)
        expect(Q.ws.readyState).toBe(OPEN)
        expect(Q.messages).toEqual([])
        expect(B.messages.length).toBe(bBaseline)
        expect(B2.messages.length).toBe(b2Baseline)
      }),
      { numRuns: 150, interruptAfterTimeLimit: TIME_BUDGET_MS, endOnFailure: false }
    )
    console.log(`(a) ${batchNo} batches, ${delivered} frames delivered; message kinds: ${JSON.stringify(Object.fromEntries(labels))}`)
    expect(delivered).toBeGreaterThan(0)
    await expectRelayAlive()
  }, 120_000)
})

// ---------------------------------------------------------------------------------------------
// (b) arbitrary phone frames
// ---------------------------------------------------------------------------------------------

interface PhoneMsg {
  readonly phone: 0 | 1
  readonly text: string
  readonly binary: boolean
}

const renderArb = (v: unknown) =>
  fc.constantFrom<(x: unknown) => string>(
    (x) => JSON.stringify(x),
    (x) => JSON.stringify(x, null, 2),
    (x) => `\t${JSON.stringify(x, null, "\t")}\n`,
    (x) => ` \r\n ${JSON.stringify(x)}  `
  ).map((render) => render(v))

const phoneMsgArb: fc.Arbitrary<PhoneMsg> = fc.record({
  phone: fc.constantFrom<0 | 1>(0, 1),
  text: fc.oneof(
    { weight: 8, arbitrary: jsonValueArb.chain(renderArb) },
    { weight: 1, arbitrary: loneSurrogates.map((s) => JSON.stringify([s])) },
    { weight: 1, arbitrary: fc.constantFrom("0", "-0", "1e400", "12345678901234567890.000", "\"\\u00e9\\ud83d\\ude00\"", "  null  ", "true") }
  ),
  binary: fc.boolean()
})

const sendFromPhone = (m: PhoneMsg) => {
  const phone = m.phone === 0 ? P1 : P2
  phone.ws.send(m.binary ? Buffer.from(m.text, "utf8") : m.text, { binary: m.binary })
}

/** Waits for `count` new envelopes on B and checks them against what each phone sent. */
const checkWrapped = async (mark: number, sent: ReadonlyArray<PhoneMsg>, deepEqual: boolean) => {
  await B.waitFor(mark + sent.length, 20_000)
  const got = B.messages.slice(mark)
  expect(got.length).toBe(sent.length)
  for (const [idx, id] of [[0, P1_ID], [1, P2_ID]] as const) {
    const mine = sent.filter((m) => m.phone === idx)
    const prefix = `{"conn_id":"${id}","frame":`
    const theirs = got.filter((e) => e.startsWith(prefix))
    expect(theirs.length, `envelopes for ${id}`).toBe(mine.length)
    theirs.forEach((envelope, i) => {
      // The phone's text is spliced in verbatim: exactly these two keys, in this order.
      expect(envelope === prefix + mine[i]!.text + "}", `envelope ${i} of ${id} is the phone's text verbatim`).toBe(true)
      if (deepEqual) {
        const parsed = JSON.parse(envelope) as { conn_id: string; frame: unknown }
        expect(Object.keys(parsed)).toEqual(["conn_id", "frame"])
        expect(parsed.frame).toEqual(JSON.parse(mine[i]!.text))
      }
    })
  }
}

describe("(b) arbitrary phone frames", () => {
  it("reach the binary wrapped verbatim, deep-equal, in per-phone order", async () => {
    let runs = 0
    await fc.assert(
      fc.asyncProperty(fc.array(phoneMsgArb, { minLength: 1, maxLength: 10 }), async (batch) => {
        runs++
        const mark = B.messages.length
        for (const m of batch) sendFromPhone(m)
        await checkWrapped(mark, batch, true)
        expect(P1.ws.readyState).toBe(OPEN)
        expect(P2.ws.readyState).toBe(OPEN)
      }),
      { numRuns: 150, interruptAfterTimeLimit: TIME_BUDGET_MS }
    )
    console.log(`(b) ${runs} batches`)
    await expectRelayAlive()
  }, 120_000)

  it("deep nesting and big unicode values up to exactly 256 KiB are wrapped verbatim", async () => {
    const deep = fc.record({
      depth: fc.integer({ min: 1, max: MAX_FRAME / 2 }),
      kind: fc.constantFrom("array", "object")
    }).map(({ depth, kind }) => {
      if (kind === "array") return "[".repeat(depth) + "]".repeat(depth)
      // {"":{"":…0…}} costs 6 bytes per level.
      const d = Math.min(depth, Math.floor((MAX_FRAME - 1) / 6))
      return `{"":`.repeat(d) + "0" + "}".repeat(d)
    })
    const big = fc.record({
      unit: fc.string({ unit: "binary", minLength: 1, maxLength: 8 }),
      target: fc.integer({ min: 1000, max: MAX_FRAME }),
      exact: fc.boolean()
    }).map(({ unit, target, exact }) => {
      // ["<unit repeated>","<ascii padding>"] with total UTF-8 length ≤ target (== MAX_FRAME when exact).
      const goal = exact ? MAX_FRAME : target
      const encodedUnit = JSON.stringify(unit).slice(1, -1)
      const unitBytes = Buffer.byteLength(encodedUnit)
      const reps = Math.max(0, Math.floor((goal - 8) / 2 / unitBytes))
      const head = `["${encodedUnit.repeat(reps)}","`
      const pad = Math.max(0, goal - Buffer.byteLength(head) - 2)
      return head + "x".repeat(pad) + `"]`
    })
    let runs = 0
    let atLimit = 0
    await fc.assert(
      fc.asyncProperty(fc.oneof(deep, big), fc.constantFrom<0 | 1>(0, 1), fc.boolean(), async (text, phone, binary) => {
        runs++
        expect(Buffer.byteLength(text)).toBeLessThanOrEqual(MAX_FRAME)
        if (Buffer.byteLength(text) === MAX_FRAME) atLimit++
        const mark = B.messages.length
        const msg: PhoneMsg = { phone, text, binary }
        sendFromPhone(msg)
        // Deep-equal through vitest's recursive comparison is only sane for shallow values; the
        // verbatim text check covers the deep ones (same text ⇒ same value).
        await checkWrapped(mark, [msg], !text.startsWith("[[[[[[[[") && !text.startsWith(`{"":{"":{"":{"":`))
        expect(JSON.parse(B.messages[mark]!)).toHaveProperty("frame")
      }),
      { numRuns: 40, interruptAfterTimeLimit: TIME_BUDGET_MS }
    )
    console.log(`(b) big/deep: ${runs} runs, ${atLimit} exactly at 256 KiB`)
    expect(P1.ws.readyState).toBe(OPEN)
    expect(P2.ws.readyState).toBe(OPEN)
    await expectRelayAlive()
  }, 120_000)
})

// ---------------------------------------------------------------------------------------------
// (c) close codes in directives
// ---------------------------------------------------------------------------------------------

const isWireCode = (c: number) => (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999)

type CodeCase = { readonly raw: string; readonly expect: "zero" | "malformed" | { readonly code: number } }

const classify = (raw: string): CodeCase => {
  const value = JSON.parse(raw) as unknown
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 65535) return { raw, expect: "malformed" }
  if (value === 0) return { raw, expect: "zero" }
  return { raw, expect: { code: isWireCode(value) ? value : 1011 } }
}

const codeArb: fc.Arbitrary<CodeCase> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 65535 }).map(String) },
  { weight: 1, arbitrary: fc.constantFrom("0", "-0") },
  {
    weight: 3,
    arbitrary: fc.constantFrom(0, 1, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1012, 1013, 1014, 1015, 1016, 2999, 3000, 4404, 4999, 5000, 65535)
      .map(String)
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      "1000.5", "-1", "-1000", "65536", "66536", "70000", "4294968296", "1e10", "-0.5", "0.5", "1e400", "-1e400",
      "\"1000\"", "\"\"", "true", "false", "[1000]", "{}", "{\"code\":1000}"
    )
  }
).map(classify)

describe("(c) close codes in directives", () => {
  it("wire codes pass through, other integers become 1011, 0 is no directive, the rest is malformed", async () => {
    const selfClosed = new Set<string>()
    const directiveClosed = new Set<string>()
    let run = 0
    const seen = { zero: 0, malformed: 0, passed: 0, replaced: 0 }
    await fc.assert(
      fc.asyncProperty(codeArb, fc.boolean(), async (c, withFrame) => {
        const k = ++run
        const phone = await dialPhone(relay.url, S3)
        const connId = await learnConnId(B3, phone, `c${k}`)
        const frame = withFrame ? `{"run":${k}}` : undefined
        B3.send(`{"conn_id":"${connId}",${frame === undefined ? "" : `"frame":${frame},`}"close_code":${c.raw}}`)
        if (typeof c.expect === "object") {
          const closed = await Promise.race([phone.closed, new Promise<undefined>((r) => setTimeout(() => r(undefined), 15_000))])
          expect(closed, `phone closed by directive ${c.raw}`).toEqual({ code: c.expect.code, reason: "" })
          expect(phone.messages).toEqual(frame === undefined ? [] : [frame])
          directiveClosed.add(connId)
          if (c.expect.code === Number(c.raw)) seen.passed++
          else seen.replaced++
        } else {
          // No directive: the frame (if any, and only for close_code 0) arrives, the phone stays open.
          const sentinel = `{"sentinel":${k}}`
          B3.send(`{"conn_id":"${connId}","frame":${sentinel}}`)
          await eventually(() => phone.messages.includes(sentinel) || phone.ws.readyState !== OPEN, 15_000)
          expect(phone.ws.readyState, `phone stays open after close_code ${c.raw}`).toBe(OPEN)
          const wanted = c.expect === "zero" && frame !== undefined ? [frame, sentinel] : [sentinel]
          expect(phone.messages).toEqual(wanted)
          seen[c.expect]++
          phone.ws.close(1000)
          await phone.closed
          selfClosed.add(connId)
        }
        expect(B3.ws.readyState, "a directive never affects the binary").toBe(OPEN)
      }),
      { numRuns: 150, interruptAfterTimeLimit: TIME_BUDGET_MS }
    )
    console.log(`(c) ${run} runs: ${JSON.stringify(seen)}`)
    // Close notices (§2.4): one per phone that closed on its own (1000), none for directive closes.
    await eventually(() => {
      const notices = B3.messages.map((m) => JSON.parse(m) as Record<string, unknown>).filter((e) => "close_code" in e)
      return notices.length >= selfClosed.size
    }, 15_000)
    await eventually(async () => {
      const body = (await (await fetch(`${relay.httpUrl}/healthz`)).json()) as { connected_phones: number }
      return body.connected_phones === 3 // P1, P2, Q
    }, 15_000)
    const notices = B3.messages.map((m) => JSON.parse(m) as Record<string, unknown>).filter((e) => "close_code" in e)
    for (const n of notices) {
      expect(Object.keys(n)).toEqual(["conn_id", "close_code"])
      expect(directiveClosed.has(n.conn_id as string), `no close notice after a directive (${String(n.conn_id)})`).toBe(false)
      expect(n.close_code).toBe(1000)
    }
    expect(new Set(notices.map((n) => n.conn_id))).toEqual(selfClosed)
    await expectRelayAlive()
  }, 120_000)
})

// ---------------------------------------------------------------------------------------------
// (d) hostile server-ids: the conn_id is built from an attacker-controlled header
// ---------------------------------------------------------------------------------------------

describe("(d) hostile server-ids", () => {
  it("conn_ids built from server-ids full of JSON syntax are escaped in envelopes and still routable", async () => {
    // Visible ASCII only (HTTP header values); no leading/trailing blanks (the HTTP parser trims those).
    const idChar = fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom("\"", "\\", "{", "}", "[", "]", ":", ",", "/", "u", "0") },
      { weight: 2, arbitrary: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)) }
    )
    let runs = 0
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: idChar, minLength: 1, maxLength: 64 }), fc.nat(), async (raw, salt) => {
        const serverId = `${raw}~${++runs}~${salt}`
        const binary = await dialBinary(relay.url, serverId)
        const phone = await dialPhone(relay.url, serverId)
        try {
          phone.send(`{"x":${runs}}`)
          const [envelope] = await binary.waitFor(1, 10_000)
          const parsed = JSON.parse(envelope!) as { conn_id: string; frame: unknown }
          expect(Object.keys(parsed)).toEqual(["conn_id", "frame"])
          expect(parsed.conn_id.startsWith(`client-${serverId}-`)).toBe(true)
          expect(parsed.conn_id).toMatch(/-[0-9a-f]{8}$/)
          expect(parsed.conn_id.length).toBe(`client-${serverId}-`.length + 8)
          expect(parsed.frame).toEqual({ x: runs })
          binary.send(JSON.stringify({ conn_id: parsed.conn_id, frame: [serverId] }))
          expect(await phone.waitFor(1, 10_000)).toEqual([JSON.stringify([serverId])])
          // Its own close notice is a valid envelope too.
          phone.ws.close(4000)
          await phone.closed
          await binary.waitFor(2, 10_000)
          expect(JSON.parse(binary.messages[1]!)).toEqual({ conn_id: parsed.conn_id, close_code: 4000 })
        } finally {
          phone.ws.close()
          binary.ws.close()
          await binary.closed
        }
      }),
      { numRuns: 40, interruptAfterTimeLimit: TIME_BUDGET_MS }
    )
    await expectRelayAlive()
  }, 120_000)
})
