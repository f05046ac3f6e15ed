/**
 * The exact value of a JSON number literal, as a whole number in `0..max` (SPEC §2.2 `close_code`).
 *
 * A float parse rounds: `4000.0000000000000001` and `1e-400` become 4000 and 0, though neither is
 * a whole number. Here the literal's digits and exponent are read as a decimal, `digits × 10^exp`,
 * so a value is accepted only when it is exactly an integer: `4e3`, `4000.0`, `40000e-1` are 4000.
 * Works on the bytes of a literal the JSON scanner has already validated; no string is built.
 */

/** Exponents beyond this are out of any range we read (and would only make the arithmetic slow). */
const EXPONENT_LIMIT = 1_000_000

const isDigit = (c: number | undefined): boolean => c !== undefined && c >= 0x30 && c <= 0x39

/**
 * The whole number in `0..max` that the JSON number `b[start, end)` exactly equals, or -1 when it
 * is not a whole number or is outside that range. `-0` (in any spelling) is 0.
 */
export const wholeNumberInRange = (b: Uint8Array, start: number, end: number, max: number): number => {
  let i = start
  const negative = b[i] === 0x2d
  if (negative) i++
  // The literal's digits (integer part then fraction, leading zeros skipped) as an integer `value`
  // whose trailing zeros are held back, so the scale below is exact.
  let value = 0
  let significant = 0 // digits counted into `value` after the first non-zero digit
  let trailingZeros = 0 // zeros after the last non-zero digit (not yet multiplied into `value`)
  let fractionDigits = 0
  let overflow = false
  const take = (digit: number): void => {
    if (digit === 0) {
      if (significant > 0) trailingZeros++
      return
    }
    // Multiply in the zeros held back, then the digit. Past 16 significant digits the value is far
    // beyond any 16-bit range, so only `overflow` is kept.
    significant += trailingZeros + 1
    if (significant > 16) overflow = true
    else value = value * 10 ** (trailingZeros + 1) + digit
    trailingZeros = 0
  }
  while (i < end && isDigit(b[i])) take(b[i++]! - 0x30)
  if (b[i] === 0x2e) {
    i++
    while (i < end && isDigit(b[i])) {
      take(b[i++]! - 0x30)
      fractionDigits++
    }
  }
  let exponent = 0
  if (i < end && (b[i] === 0x65 || b[i] === 0x45)) {
    i++
    const expNegative = b[i] === 0x2d
    if (b[i] === 0x2b || b[i] === 0x2d) i++
    let e = 0
    while (i < end && isDigit(b[i])) {
      if (e < EXPONENT_LIMIT) e = e * 10 + (b[i]! - 0x30)
      i++
    }
    exponent = expNegative ? -e : e
  }
  if (significant === 0) return 0 // every digit is zero: 0, -0, 0.000, 0e999
  // The number is value × 10^(trailingZeros - fractionDigits + exponent), value without trailing zeros.
  const scale = trailingZeros - fractionDigits + exponent
  if (scale < 0) return -1 // a fraction remains: not a whole number
  if (negative || overflow || significant + scale > 16) return -1
  const whole = value * 10 ** scale
  return whole <= max ? whole : -1
}
