/**
 * The byte-level JSON validator and envelope decoder against their oracle, `JSON.parse`: the
 * relay must accept and route exactly what a JSON.parse-based relay would, byte for byte.
 */
import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { decode } from "../../src/domain/Envelope.ts"
import { isJson } from "../../src/domain/JsonBytes.ts"

const parses = (text: string): boolean => {
  try {
    JSON.parse(text)
    return true
  } catch {
    return false
  }
}

/** `text` as UTF-8 placed at byte offset `offset` of a larger buffer (views are what the relay sees). */
const bytesAt = (text: string, offset: number): Buffer => {
  const body = Buffer.from(text)
  const whole = Buffer.alloc(offset + body.length + 3, 0x20)
  body.copy(whole, offset)
  return whole.subarray(offset, offset + body.length)
}

/** Characters that matter to JSON, plus plain ASCII, multi-byte UTF-8 and control characters. */
const JSONISH = [..."{}[]\",:\\ 0123456789-+.eEtrufalsnbx/\t\n\r\u0001\u001f\u007f\f\u00a0é🎉\uFEFF"]

/** A text built from JSON's own characters: mostly invalid, often almost valid. */
const jsonish = fc.array(fc.constantFrom(...JSONISH), { maxLength: 40 }).map((chars) => chars.join(""))

/** A valid JSON text with one character deleted, inserted or replaced. */
const mutated = fc
  .tuple(fc.json(), fc.nat(), fc.constantFrom(...JSONISH), fc.constantFrom("delete", "insert", "replace"))
  .map(([text, at, c, how]) => {
    const i = text.length === 0 ? 0 : at % text.length
    if (how === "delete") return text.slice(0, i) + text.slice(i + 1)
    if (how === "insert") return text.slice(0, i) + c + text.slice(i)
    return text.slice(0, i) + c + text.slice(i + 1)
  })

/** Long strings (the word-at-a-time path): mostly plain bytes, with escapes and specials anywhere. */
const longString = fc
  .array(
    fc.oneof(
      { weight: 30, arbitrary: fc.constantFrom("a", "Z", "0", " ", "~", "é", "🎉", "\u007f") },
      { weight: 1, arbitrary: fc.constantFrom("\\\"", "\\\\", "\\n", "\\u00e9", "\\uD83C", "\"", "\\", "\n", "\u0001", "\\x", "\\u12") }
    ),
    { minLength: 40, maxLength: 300 }
  )
  .map((parts) => `"${parts.join("")}"`)

describe("isJson on bytes agrees with JSON.parse", () => {
  const valid = [
    "0", "-0", "1.5e-7", "2E+10", "1e400", "-0.0", "\"\"", "\"\\u00e9\\ud83c\\/\\b\\f\\n\\r\\t\\\"\\\\\"", "true", "false",
    "null", "[]", "{}", " [ 1 , { \"a\" : [ ] } ]\r\n", "\"é🎉\u007f\"", "{\"a\":1,\"a\":2}", "[\"\u2028\"]"
  ]
  const invalid = [
    "", " ", "01", "-", "1.", ".5", "1e", "1e+", "+1", "--1", "0x1", "1 2", "[1,]", "[,1]", "{,}", "{\"a\":1,}",
    "{\"a\" 1}", "{a:1}", "{'a':1}", "\"\t\"", "\"\n\"", "\"\\x\"", "\"\\u12\"", "\"\\u12g4\"", "\"abc", "tru", "nul",
    "nulll", "[1", "{\"a\":1", "]", "\f1", "\u000b1", "\u00a01", "\uFEFF1", "NaN", "Infinity", "[1]]", "{}}", "\"\\\""
  ]
  for (const text of valid) it(`accepts ${JSON.stringify(text)}`, () => assert.isTrue(isJson(Buffer.from(text))))
  for (const text of invalid) it(`rejects ${JSON.stringify(text)}`, () => assert.isFalse(isJson(Buffer.from(text))))

  it("deep nesting needs no recursion (100 000 levels)", () => {
    const deep = "[".repeat(100_000) + "]".repeat(100_000)
    assert.isTrue(isJson(Buffer.from(deep)))
    assert.isFalse(isJson(Buffer.from(deep.slice(0, -1))))
    assert.isTrue(isJson(Buffer.from("{\"a\":".repeat(50_000) + "1" + "}".repeat(50_000))))
  })

  it("on texts made of JSON's own characters", () => {
    fc.assert(fc.property(jsonish, (text) => isJson(Buffer.from(text)) === parses(text)), { numRuns: 20_000 })
  })

  it("on valid JSON and on JSON with one character changed", () => {
    fc.assert(fc.property(fc.json(), (text) => isJson(Buffer.from(text))), { numRuns: 2_000 })
    fc.assert(fc.property(mutated, (text) => isJson(Buffer.from(text)) === parses(text)), { numRuns: 20_000 })
  })

  it("on long strings at any byte alignment", () => {
    fc.assert(
      fc.property(longString, fc.nat(7), fc.constantFrom("", " ", "[", "{\"k\":"), (text, offset, open) => {
        const close = open === "[" ? "]" : open === "" || open === " " ? "" : "}"
        const whole = `${open}${text}${close}`
        return isJson(bytesAt(whole, offset)) === parses(whole)
      }),
      { numRuns: 20_000 }
    )
  })

  it("on many messages sharing one buffer, rewritten between scans (as one socket read's messages are)", () => {
    // The word scan keeps one view of the last buffer: it must read what the buffer holds now, at
    // each message's own offset, and follow a switch to another buffer and back.
    const shared = Buffer.alloc(4096, 0x20)
    const other = Buffer.alloc(4096, 0x20)
    fc.assert(
      fc.property(fc.array(fc.tuple(longString, fc.nat(1000), fc.boolean()), { minLength: 1, maxLength: 8 }), (messages) =>
        messages.every(([text, offset, useOther]) => {
          const whole = text
          const body = Buffer.from(whole)
          const target = useOther ? other : shared
          body.copy(target, offset)
          return isJson(target.subarray(offset, offset + body.length)) === parses(whole)
        })
      ),
      { numRuns: 5_000 }
    )
  })
})

/**
 * A `close_code` literal's exact decimal value when it is a whole number in 0..65535 (SPEC §2.2:
 * the literal's value, not the double `JSON.parse` rounds it to), else undefined. Independent of
 * the relay's `JsonInteger`: digits and a power of ten, in BigInt.
 */
const exactCloseCode = (literal: string): number | undefined => {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal)
  if (m === null) return undefined
  const [, sign, whole = "", fraction = "", exponent = "0"] = m
  let digits = `${whole}${fraction}`.replace(/^0+/, "")
  if (digits === "") return 0 // 0, -0, 0.000e7: zero
  let power = BigInt(exponent) - BigInt(fraction.length)
  while (digits.endsWith("0")) {
    digits = digits.slice(0, -1)
    power += 1n
  }
  if (sign === "-" || power < 0n || power > 5n) return undefined // negative, a fraction, or ≥ 10^6
  const value = BigInt(digits) * 10n ** power
  return value <= 65535n ? Number(value) : undefined
}

/** The reference: SPEC §2.2 on what `JSON.parse` builds, with `close_code` read exactly (its source text). */
const reference = (text: string) => {
  let parsed: unknown
  // The source text of each `close_code` number, by the object that holds it (Node's reviver context).
  const closeCodeSource = new WeakMap<object, string>()
  try {
    parsed = JSON.parse(text, function(this: object, key: string, value: unknown, context?: { source?: string }) {
      if (key === "close_code" && typeof value === "number" && context?.source !== undefined) closeCodeSource.set(this, context.source)
      return value
    } as (this: unknown, key: string, value: unknown) => unknown)
  } catch {
    return { _tag: "Malformed" }
  }
  const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)
  if (!isObject(parsed)) return { _tag: "Malformed" }
  const { close_code: closeCode, conn_id: connId, frame, push_wake: pushWake } = parsed
  if (connId != null && typeof connId !== "string") return { _tag: "Malformed" }
  let code = 0
  if (closeCode != null) {
    const source = closeCodeSource.get(parsed)
    const exact = typeof closeCode === "number" && source !== undefined ? exactCloseCode(source) : undefined
    if (exact === undefined) return { _tag: "Malformed" }
    code = exact
  }
  if (pushWake != null && !isObject(pushWake)) return { _tag: "Malformed" }
  if (connId == null || connId === "") return pushWake != null ? { _tag: "Wake", pushWake } : { _tag: "MissingConnId" }
  if (code === 0 && frame == null) return { _tag: "MissingFrame" }
  return { _tag: "Deliver", connId, frame: frame ?? undefined, closeCode: code }
}

/** Envelopes with the keys the relay reads (also escaped), duplicates, odd values and whitespace. */
const value = fc.oneof(
  fc.json(),
  fc.constantFrom("null", "\"\"", "\"c\"", "\"c\\\"d\"", "\"\\u0063\"", "4000", "1e3", "-0", "1000.5", "65536", "-1", "{}", "[]", "\"x\"",
    "2.258e-996", "4000.0000000000000001", "4e3", "40.00e2", "0.0", "-0.0e5", "65535.000", "6.5536e4", "1e400")
)
const key = fc.constantFrom("conn_id", "close_code", "push_wake", "frame", "fr\\u0061me", "conn\\u005fid", "other", "frame ")
const ws = fc.constantFrom("", " ", "\n\t")
const envelope = fc
  .tuple(fc.array(fc.tuple(key, value, ws), { maxLength: 6 }), ws)
  .map(([members, outer]) => `${outer}{${members.map(([k, v, w]) => `${w}"${k}"${w}:${w}${v}${w}`).join(",")}}${outer}`)

describe("decode on bytes agrees with JSON.parse", () => {
  const check = (text: string, offset = 0): boolean => {
    const got = decode(bytesAt(text, offset))
    const want = reference(text)
    if (got._tag !== want._tag) return false
    if (got._tag === "Wake" && want._tag === "Wake") {
      assert.deepStrictEqual(JSON.parse(got.pushWake.toString()), want.pushWake)
      return true
    }
    if (got._tag !== "Deliver" || want._tag !== "Deliver") return true
    if (got.connId !== want.connId || got.closeCode !== want.closeCode) return false
    if (got.frame === undefined || want.frame === undefined) return got.frame === want.frame
    // The frame's bytes are its exact text (checked verbatim in envelope.test.ts); here: the same value.
    assert.deepStrictEqual(JSON.parse(got.frame.toString()), want.frame)
    return true
  }

  it("on generated envelopes", () => {
    fc.assert(fc.property(envelope, fc.nat(7), (text, offset) => check(text, offset)), { numRuns: 20_000 })
  })

  it("on envelopes with one character changed, and on other texts", () => {
    const changed = fc.tuple(envelope, fc.nat(), fc.constantFrom(...JSONISH)).map(([text, at, c]) => {
      const i = at % (text.length + 1)
      return text.slice(0, i) + c + text.slice(i + 1)
    })
    fc.assert(fc.property(changed, (text) => check(text)), { numRuns: 20_000 })
    fc.assert(fc.property(fc.oneof(jsonish, mutated), (text) => check(text)), { numRuns: 10_000 })
  })
})
