/**
 * JSON validation over UTF-8 bytes (RFC 8259): accepts exactly the texts `JSON.parse` accepts,
 * without building anything — no string for the message, no parsed value. Pure, no I/O.
 *
 * The relay only needs to know *that* a message is JSON and *where* a value's bytes are; it never
 * needs the value. Decoding to a string and parsing it would create garbage proportional to every
 * forwarded byte (a 64 KiB frame made two 64 KiB strings), which is what grew the heap while
 * frames flowed towards stalled readers.
 *
 * The bytes are assumed to be valid UTF-8 (ws checks text messages; binary-opcode messages are
 * checked by the adapter), so any byte ≥ 0x80 is part of a character inside a string. Nesting is
 * handled with an explicit stack, never recursion: depth is bounded by the message size only, as
 * with `JSON.parse`.
 */

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COMMA = 0x2c
const COLON = 0x3a
const OPEN_OBJECT = 0x7b
const CLOSE_OBJECT = 0x7d
const OPEN_ARRAY = 0x5b
const CLOSE_ARRAY = 0x5d
const MINUS = 0x2d

/** `JSON.parse`'s whitespace: space, tab, LF, CR. */
export const skipWs = (b: Uint8Array, i: number): number => {
  const n = b.length
  while (i < n) {
    const c = b[i]!
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break
    i++
  }
  return i
}

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39

/** Hex digit values, -1 for anything else. */
const HEX = new Int8Array(256).fill(-1)
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c
for (let c = 0; c < 6; c++) HEX[0x41 + c] = HEX[0x61 + c] = 10 + c

/** Escapes after `\`: `" \ / b f n r t` (`u` is handled apart). */
const SIMPLE_ESCAPE = new Uint8Array(256)
for (const c of "\"\\/bfnrt") SIMPLE_ESCAPE[c.charCodeAt(0)] = 1

/**
 * A word view of the last buffer scanned. The messages of one socket read share one ArrayBuffer,
 * so one view serves them all instead of a new one per string (100 B per round trip at 100 B
 * frames, docs/performance.md). It keeps that one buffer reachable until another is scanned.
 */
let viewed: ArrayBufferLike | undefined
let words32: Uint32Array<ArrayBufferLike> = new Uint32Array(0)
const wordsOf = (buffer: ArrayBufferLike): Uint32Array => {
  if (buffer !== viewed) {
    words32 = new Uint32Array(buffer, 0, buffer.byteLength >> 2)
    viewed = buffer
  }
  return words32
}

/**
 * The first index at or after `j` (and before `n`) whose 4-byte word may hold a `"`, a `\\` or a
 * control character: long strings are skipped a word at a time (SWAR), not a byte at a time.
 */
const skipPlainWords = (b: Uint8Array, j: number, n: number): number => {
  // Byte by byte up to a 4-byte boundary of the underlying buffer.
  for (; ((b.byteOffset + j) & 3) !== 0; j++) {
    if (j >= n) return j
    const c = b[j]!
    if (c < 0x20 || c === QUOTE || c === BACKSLASH) return j
  }
  const words = (n - j) >> 2
  if (words <= 0) return j
  const w32 = wordsOf(b.buffer)
  const first = (b.byteOffset + j) >> 2
  let k = 0
  for (; k < words; k++) {
    const w = w32[first + k]!
    const quote = w ^ 0x22222222
    const backslash = w ^ 0x5c5c5c5c
    // A byte < 0x20, or a zero byte after xor (= that byte): the classic has-less / has-zero tests.
    if ((((w - 0x20202020) & ~w) | ((quote - 0x01010101) & ~quote) | ((backslash - 0x01010101) & ~backslash)) & 0x80808080) break
  }
  return j + k * 4
}

/** Strings at least this long (bytes left in the message) are scanned a word at a time. */
const WORD_SCAN_MIN = 64

/**
 * `i` at an opening quote: the index just past the closing quote, or -1 if the string is not
 * valid JSON (a raw control character, a bad escape, or no closing quote).
 */
export const stringEnd = (b: Uint8Array, i: number): number => {
  const n = b.length
  let j = i + 1
  let plain = 0
  while (j < n) {
    const c = b[j]!
    if (c >= 0x20 && c !== QUOTE && c !== BACKSLASH) {
      j++
      // A long run of plain bytes: look at the rest a word at a time (bytes again at the word that stops it).
      if (++plain === 16 && n - j >= WORD_SCAN_MIN) j = skipPlainWords(b, j, n)
      continue
    }
    plain = 0
    if (c === QUOTE) return j + 1
    if (c === BACKSLASH) {
      if (j + 1 >= n) return -1
      const e = b[j + 1]!
      if (SIMPLE_ESCAPE[e] === 1) j += 2
      else if (
        e === 0x75 && j + 5 < n &&
        (HEX[b[j + 2]!]! | HEX[b[j + 3]!]! | HEX[b[j + 4]!]! | HEX[b[j + 5]!]!) >= 0
      ) j += 6
      else return -1
    } else return -1
  }
  return -1
}

/** `i` at `-` or a digit: the index just past the number, or -1. */
const numberEnd = (b: Uint8Array, i: number): number => {
  const n = b.length
  let j = i
  if (b[j] === MINUS) j++
  if (j >= n) return -1
  const first = b[j]!
  if (first === 0x30) j++
  else if (first >= 0x31 && first <= 0x39) {
    j++
    while (j < n && isDigit(b[j]!)) j++
  } else return -1
  if (j < n && b[j] === 0x2e) {
    j++
    if (j >= n || !isDigit(b[j]!)) return -1
    while (j < n && isDigit(b[j]!)) j++
  }
  if (j < n && (b[j] === 0x65 || b[j] === 0x45)) {
    j++
    if (j < n && (b[j] === 0x2b || b[j] === MINUS)) j++
    if (j >= n || !isDigit(b[j]!)) return -1
    while (j < n && isDigit(b[j]!)) j++
  }
  return j
}

const TRUE = [0x74, 0x72, 0x75, 0x65]
const FALSE = [0x66, 0x61, 0x6c, 0x73, 0x65]
const NULL = [0x6e, 0x75, 0x6c, 0x6c]

const literalEnd = (b: Uint8Array, i: number, literal: ReadonlyArray<number>): number => {
  if (i + literal.length > b.length) return -1
  for (let k = 1; k < literal.length; k++) if (b[i + k] !== literal[k]) return -1
  return i + literal.length
}

/**
 * `i` at a member's key (whitespace skipped): the index of its value (whitespace skipped), or -1.
 */
const memberValueStart = (b: Uint8Array, i: number): number => {
  if (i >= b.length || b[i] !== QUOTE) return -1
  const keyEnd = stringEnd(b, i)
  if (keyEnd < 0) return -1
  const colon = skipWs(b, keyEnd)
  if (colon >= b.length || b[colon] !== COLON) return -1
  return skipWs(b, colon + 1)
}

/** Open containers of the value being scanned (the closing byte of each); shared, never re-entered. */
let stack = new Uint8Array(64)

/**
 * `i` at the first byte of a value (whitespace skipped): the index just past the value, or -1 if
 * no valid JSON value starts there.
 */
export const valueEnd = (b: Uint8Array, i: number): number => {
  const n = b.length
  let depth = 0
  for (;;) {
    // A value starts at i.
    if (i >= n) return -1
    const c = b[i]!
    if (c === QUOTE) i = stringEnd(b, i)
    else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      const close = c === OPEN_OBJECT ? CLOSE_OBJECT : CLOSE_ARRAY
      i = skipWs(b, i + 1)
      if (i < n && b[i] === close) i++
      else {
        if (depth === stack.length) {
          const grown = new Uint8Array(depth * 2)
          grown.set(stack)
          stack = grown
        }
        stack[depth++] = close
        if (c === OPEN_OBJECT && (i = memberValueStart(b, i)) < 0) return -1
        continue
      }
    } else if (c === MINUS || isDigit(c)) i = numberEnd(b, i)
    else if (c === 0x74) i = literalEnd(b, i, TRUE)
    else if (c === 0x66) i = literalEnd(b, i, FALSE)
    else if (c === 0x6e) i = literalEnd(b, i, NULL)
    else return -1
    if (i < 0) return -1
    // A value ended at i: close containers, or go on to the next element.
    for (;;) {
      if (depth === 0) return i
      i = skipWs(b, i)
      if (i >= n) return -1
      const d = b[i]!
      const close = stack[depth - 1]!
      if (d === close) {
        i++
        depth--
      } else if (d === COMMA) {
        i = skipWs(b, i + 1)
        if (close === CLOSE_OBJECT && (i = memberValueStart(b, i)) < 0) return -1
        break
      } else return -1
    }
  }
}

/** Syntactically valid JSON (any value; surrounding whitespace allowed; empty is invalid). */
export const isJson = (b: Uint8Array): boolean => {
  const end = valueEnd(b, skipWs(b, 0))
  return end >= 0 && skipWs(b, end) === b.length
}
