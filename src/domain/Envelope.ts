/**
 * The routing envelope of the binary leg (SPEC §2). Pure: no I/O, no Effect.
 *
 * Wrapping splices the phone's original text in (never parse + re-serialise: that can change
 * numbers and escapes). Unwrapping validates with `JSON.parse` and then finds the exact raw text
 * of the `frame` value with a small scanner, so the phone receives the bytes its binary sent.
 */

/** `{"conn_id":"<id>","frame":` as UTF-8 — computed once per phone; the id is JSON-escaped (server-ids are attacker-controlled). */
export const envelopePrefix = (connId: string): Buffer => Buffer.from(`{"conn_id":${JSON.stringify(connId)},"frame":`)

const CLOSE_BRACE = Buffer.from("}")

/**
 * The envelope for one phone message: its bytes spliced between the prefix and `}` (one copy, no
 * re-encoding). `message` must be UTF-8 of valid JSON.
 */
export const wrap = (prefix: Buffer, message: Buffer): Buffer =>
  Buffer.concat([prefix, message, CLOSE_BRACE], prefix.length + message.length + 1)

/** `{"conn_id":"<id>","close_code":<n>}` — exactly these two keys (§2.4). */
export const closeNotice = (connId: string, code: number): string =>
  `{"conn_id":${JSON.stringify(connId)},"close_code":${code}}`

/** Syntactically valid JSON (any value; surrounding whitespace allowed; empty is invalid). */
export const isJson = (text: string): boolean => {
  try {
    JSON.parse(text)
    return true
  } catch {
    return false
  }
}

export type Decoded =
  /** Route `frame` (raw JSON text, or undefined for none) to `connId`; `closeCode` 0 = no directive. */
  | { readonly _tag: "Deliver"; readonly connId: string; readonly frame: string | undefined; readonly closeCode: number }
  | { readonly _tag: "Wake" }
  | { readonly _tag: "Malformed" }
  | { readonly _tag: "MissingConnId" }
  | { readonly _tag: "MissingFrame" }

const MALFORMED: Decoded = { _tag: "Malformed" }
const MISSING_CONN_ID: Decoded = { _tag: "MissingConnId" }
const MISSING_FRAME: Decoded = { _tag: "MissingFrame" }
const WAKE: Decoded = { _tag: "Wake" }

const isPlainObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** Decodes one binary message, in the validation order of SPEC §2.2. */
export const decode = (text: string): Decoded => {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return MALFORMED
  }
  if (!isPlainObject(parsed)) return MALFORMED
  const connId = parsed.conn_id
  const closeCode = parsed.close_code
  const pushWake = parsed.push_wake
  if (connId !== undefined && connId !== null && typeof connId !== "string") return MALFORMED
  if (
    closeCode !== undefined && closeCode !== null &&
    !(typeof closeCode === "number" && Number.isInteger(closeCode) && closeCode >= 0 && closeCode <= 65535)
  ) return MALFORMED
  if (pushWake !== undefined && pushWake !== null && !isPlainObject(pushWake)) return MALFORMED

  if (connId === undefined || connId === null || connId === "") {
    return pushWake !== undefined && pushWake !== null ? WAKE : MISSING_CONN_ID
  }
  const code = typeof closeCode === "number" ? closeCode : 0
  const frame = parsed.frame
  const hasFrame = frame !== undefined && frame !== null
  if (code === 0 && !hasFrame) return MISSING_FRAME
  return { _tag: "Deliver", connId, frame: hasFrame ? rawMemberText(text, "frame") : undefined, closeCode: code }
}

// --- raw member scanner -------------------------------------------------------------------------
// Only ever runs on text JSON.parse accepted, so it may assume well-formed JSON.

const isWs = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09

const skipWs = (s: string, i: number): number => {
  while (i < s.length && isWs(s.charCodeAt(i))) i++
  return i
}

/** `i` at an opening quote; returns the index just past the closing quote. */
const skipString = (s: string, i: number): number => {
  let j = i + 1
  for (;;) {
    const q = s.indexOf("\"", j)
    let backslashes = 0
    for (let k = q - 1; s.charCodeAt(k) === 0x5c; k--) backslashes++
    if (backslashes % 2 === 0) return q + 1
    j = q + 1
  }
}

/** `i` at the first character of a value; returns the index just past it. */
const skipValue = (s: string, i: number): number => {
  const c = s.charCodeAt(i)
  if (c === 0x22) return skipString(s, i)
  if (c === 0x7b || c === 0x5b) {
    let depth = 0
    let j = i
    for (;;) {
      const d = s.charCodeAt(j)
      if (d === 0x22) {
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
  }
  let j = i
  while (j < s.length) {
    const d = s.charCodeAt(j)
    if (d === 0x2c || d === 0x7d || d === 0x5d || isWs(d)) break
    j++
  }
  return j
}

/**
 * The raw text of the top-level member `name` of a JSON object (the last one wins, as with
 * JSON.parse). Keys are compared after unescaping.
 */
export const rawMemberText = (s: string, name: string): string | undefined => {
  let found: string | undefined
  let i = skipWs(s, 0) + 1 // past "{"
  for (;;) {
    i = skipWs(s, i)
    if (s.charCodeAt(i) === 0x7d) return found
    const keyEnd = skipString(s, i)
    const rawKey = s.slice(i, keyEnd)
    const key = rawKey.includes("\\") ? (JSON.parse(rawKey) as string) : rawKey.slice(1, -1)
    i = skipWs(s, keyEnd) + 1 // past ":"
    i = skipWs(s, i)
    const valueEnd = skipValue(s, i)
    if (key === name) found = s.slice(i, valueEnd)
    i = skipWs(s, valueEnd)
    if (s.charCodeAt(i) === 0x2c) i++
  }
}
