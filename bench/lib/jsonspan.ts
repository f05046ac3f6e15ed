/**
 * Raw-text extraction of one top-level member of a JSON object, so a relay can forward the exact
 * bytes of `frame` without re-serialising (SPEC §2.2). The input must already be known to be valid
 * JSON (callers run JSON.parse first); this scanner does not validate. Like JSON.parse, the last
 * occurrence of a duplicated key wins.
 */

const QUOTE = 0x22
const BACKSLASH = 0x5c

const isWs = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09

const skipWs = (s: string, i: number): number => {
  while (i < s.length && isWs(s.charCodeAt(i))) i++
  return i
}

/** `i` is at an opening quote; returns the index just past the closing quote. */
const skipString = (s: string, i: number): number => {
  let j = i + 1
  while (j < s.length) {
    const q = s.indexOf('"', j)
    if (q < 0) return s.length
    let k = q - 1
    while (k > i && s.charCodeAt(k) === BACKSLASH) k--
    if ((q - 1 - k) % 2 === 0) return q + 1
    j = q + 1
  }
  return s.length
}

/** `i` is at the first character of a value; returns the index just past it. */
const skipValue = (s: string, i: number): number => {
  const c = s.charCodeAt(i)
  if (c === QUOTE) return skipString(s, i)
  if (c === 0x7b || c === 0x5b) {
    let depth = 0
    let j = i
    while (j < s.length) {
      const d = s.charCodeAt(j)
      if (d === QUOTE) {
        j = skipString(s, j)
        continue
      }
      if (d === 0x7b || d === 0x5b) depth++
      else if (d === 0x7d || d === 0x5d) {
        depth--
        if (depth === 0) return j + 1
      }
      j++
    }
    return s.length
  }
  let j = i
  while (j < s.length) {
    const d = s.charCodeAt(j)
    if (d === 0x2c || d === 0x7d || d === 0x5d || isWs(d)) break
    j++
  }
  return j
}

/** [start, end) of the raw text of member `key` of the top-level object in `s`, or undefined. */
export const memberSpan = (s: string, key: string): [number, number] | undefined => {
  let found: [number, number] | undefined
  let i = skipWs(s, 0)
  if (s.charCodeAt(i) !== 0x7b) return undefined
  i = skipWs(s, i + 1)
  while (i < s.length && s.charCodeAt(i) === QUOTE) {
    const ks = i
    i = skipString(s, i)
    const rawKey = s.slice(ks + 1, i - 1)
    const k = rawKey.includes("\\") ? (JSON.parse(s.slice(ks, i)) as string) : rawKey
    i = skipWs(s, i)
    i = skipWs(s, i + 1) // past ':'
    const vs = i
    i = skipValue(s, i)
    if (k === key) found = [vs, i]
    i = skipWs(s, i)
    if (s.charCodeAt(i) !== 0x2c) break
    i = skipWs(s, i + 1)
  }
  return found
}

/** Raw text of member `key` of the top-level object in `s`, or undefined when absent. */
export const rawMember = (s: string, key: string): string | undefined => {
  const span = memberSpan(s, key)
  return span === undefined ? undefined : s.slice(span[0], span[1])
}
