/**
 * `wholeNumberInRange` reads a JSON number literal's exact value (SPEC §2.2 `close_code`), checked
 * against a reference in exact BigInt arithmetic over generated literals.
 */
import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { wholeNumberInRange } from "../../src/domain/JsonInteger.ts"

const read = (literal: string, max = 65535): number => {
  const b = Buffer.from(literal)
  return wholeNumberInRange(b, 0, b.length, max)
}

/** The exact value of the literal as digits × 10^scale, in BigInt: the whole number, or -1. */
const reference = (sign: string, int: string, frac: string, exp: number, max: number): number => {
  const digits = BigInt(int + frac)
  if (digits === 0n) return 0
  if (sign === "-") return -1
  const scale = exp - frac.length
  if (scale >= 0) {
    if (scale > 10) return -1
    const v = digits * 10n ** BigInt(scale)
    return v <= BigInt(max) ? Number(v) : -1
  }
  const divisor = 10n ** BigInt(-scale)
  if (digits % divisor !== 0n) return -1
  const v = digits / divisor
  return v <= BigInt(max) ? Number(v) : -1
}

describe("wholeNumberInRange", () => {
  it("reads the spellings of SPEC §2.2", () => {
    assert.strictEqual(read("4000"), 4000)
    assert.strictEqual(read("4e3"), 4000)
    assert.strictEqual(read("4000.0"), 4000)
    assert.strictEqual(read("4000.0000000000000001"), -1)
    assert.strictEqual(read("1e-400"), -1)
    assert.strictEqual(read("-0"), 0)
    assert.strictEqual(read("65535"), 65535)
    assert.strictEqual(read("65536"), -1)
    assert.strictEqual(read("-1"), -1)
    assert.strictEqual(read("1.5e0"), -1)
    assert.strictEqual(read("15e-1"), -1)
    assert.strictEqual(read("150e-1"), 15)
    assert.strictEqual(read("12345678901234567890"), -1)
    assert.strictEqual(read("0.000000000000000000000065535e27"), 65535)
  })

  it("agrees with exact decimal arithmetic on any literal", () => {
    const literal = fc.record({
      sign: fc.constantFrom("", "-"),
      int: fc.oneof(fc.constant("0"), fc.stringMatching(/^[1-9][0-9]{0,24}$/)),
      frac: fc.oneof(fc.constant(""), fc.stringMatching(/^[0-9]{1,24}$/)),
      exp: fc.oneof(fc.constant(undefined), fc.integer({ min: -40, max: 40 })),
      max: fc.constantFrom(65535, 1000, 0)
    })
    fc.assert(fc.property(literal, ({ sign, int, frac, exp, max }) => {
      const text = `${sign}${int}${frac === "" ? "" : `.${frac}`}${exp === undefined ? "" : `e${exp}`}`
      assert.strictEqual(read(text, max), reference(sign, int, frac, exp ?? 0, max), text)
    }), { numRuns: 20_000 })
  })
})
