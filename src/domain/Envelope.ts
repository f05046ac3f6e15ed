/**
 * The routing envelope of the binary leg (SPEC §2). Pure: no I/O, no Effect.
 *
 * Wrapping splices the phone's original bytes in (never parse + re-serialise: that can change
 * numbers and escapes). Unwrapping validates and locates the members in one pass over the bytes
 * (`JsonBytes`), so the phone receives the bytes its binary sent and no string or object is built
 * per frame.
 */
import { skipWs, stringEnd, valueEnd } from "./JsonBytes.ts"
import { wholeNumberInRange } from "./JsonInteger.ts"

/** `{"conn_id":"<id>","frame":` as UTF-8 — computed once per phone; the id is JSON-escaped (server-ids are attacker-controlled). */
export const envelopePrefix = (connId: string): Buffer => Buffer.from(`{"conn_id":${JSON.stringify(connId)},"frame":`)

const CLOSE_BRACE = Buffer.from("}")

/**
 * The envelope for one phone message, as its parts: the prefix, the message's bytes, `}` — sent
 * as one message, spliced by the copy the connection makes anyway (no copy here, no
 * re-encoding). `message` must be UTF-8 of valid JSON.
 */
export const wrap = (prefix: Buffer, message: Buffer): ReadonlyArray<Buffer> => [prefix, message, CLOSE_BRACE]

/** `{"conn_id":"<id>","close_code":<n>}` — exactly these two keys (§2.4). */
export const closeNotice = (connId: string, code: number): string =>
  `{"conn_id":${JSON.stringify(connId)},"close_code":${code}}`

export type Decoded =
  /** Route `frame` (the raw bytes of its JSON value, a view into the message; undefined for none) to `connId`; `closeCode` 0 = no directive. */
  | { readonly _tag: "Deliver"; readonly connId: string; readonly frame: Buffer | undefined; readonly closeCode: number }
  /** A wake request; `pushWake` is the raw bytes of the `push_wake` object (a view into the message). */
  | { readonly _tag: "Wake"; readonly pushWake: Buffer }
  | { readonly _tag: "Malformed" }
  | { readonly _tag: "MissingConnId" }
  | { readonly _tag: "MissingFrame" }

const MALFORMED: Decoded = { _tag: "Malformed" }
const MISSING_CONN_ID: Decoded = { _tag: "MissingConnId" }
const MISSING_FRAME: Decoded = { _tag: "MissingFrame" }

/** The envelope keys the relay reads; any other key is skipped (its value still validated). */
const CONN_ID = 1
const CLOSE_CODE = 2
const PUSH_WAKE = 3
const FRAME = 4
const KEYS: ReadonlyArray<readonly [Buffer, number]> = [
  [Buffer.from("conn_id"), CONN_ID],
  [Buffer.from("close_code"), CLOSE_CODE],
  [Buffer.from("push_wake"), PUSH_WAKE],
  [Buffer.from("frame"), FRAME]
]
const KEY_NAMES = new Map(KEYS.map(([name, key]) => [name.toString(), key]))

const hasBackslash = (b: Buffer, start: number, end: number): boolean => {
  for (let i = start; i < end; i++) if (b[i] === 0x5c) return true
  return false
}

/** The string a JSON string token `[start, end)` (quotes included) stands for. */
const stringValue = (b: Buffer, start: number, end: number): string =>
  hasBackslash(b, start + 1, end - 1) ? (JSON.parse(b.toString("utf8", start, end)) as string) : b.toString("utf8", start + 1, end - 1)

/** Which known key the string token `[start, end)` is (compared after unescaping, as JSON.parse does), 0 for none. */
const keyOf = (b: Buffer, start: number, end: number): number => {
  const length = end - start - 2
  // The raw bytes first: a known key spelled plainly (the usual case) needs no escape scan.
  for (const [name, key] of KEYS) {
    if (name.length !== length) continue
    let k = 0
    while (k < length && b[start + 1 + k] === name[k]) k++
    if (k === length) return key
  }
  return hasBackslash(b, start + 1, end - 1) ? KEY_NAMES.get(stringValue(b, start, end)) ?? 0 : 0
}

/** First byte of a JSON value token: its kind is all the checks need. */
const isNull = (b: Buffer, start: number): boolean => b[start] === 0x6e
const isString = (b: Buffer, start: number): boolean => b[start] === 0x22
const isObject = (b: Buffer, start: number): boolean => b[start] === 0x7b
const isNumber = (b: Buffer, start: number): boolean => b[start] === 0x2d || (b[start]! >= 0x30 && b[start]! <= 0x39)

/**
 * Decodes one binary message (its UTF-8 bytes), in the validation order of SPEC §2.2. One pass
 * over the bytes: the whole message is validated as JSON, the top-level members are located, and
 * the frame is returned as the exact bytes the binary sent. As with `JSON.parse`, the last of
 * duplicate keys wins and keys are compared after unescaping.
 */
export const decode = (b: Buffer): Decoded => {
  const n = b.length
  // Token spans of the members read, -1 for absent (the last duplicate wins).
  let connId = -1
  let connIdEnd = -1
  let closeCode = -1
  let closeCodeEnd = -1
  let pushWake = -1
  let pushWakeEnd = -1
  let frame = -1
  let frameEnd = -1
  let i = skipWs(b, 0)
  if (i >= n || b[i] !== 0x7b) return MALFORMED // not an object (or not JSON at all)
  i = skipWs(b, i + 1)
  if (i < n && b[i] === 0x7d) i++
  else {
    for (;;) {
      if (i >= n || b[i] !== 0x22) return MALFORMED
      const keyEnd = stringEnd(b, i)
      if (keyEnd < 0) return MALFORMED
      const key = keyOf(b, i, keyEnd)
      const colon = skipWs(b, keyEnd)
      if (colon >= n || b[colon] !== 0x3a) return MALFORMED
      const start = skipWs(b, colon + 1)
      const end = valueEnd(b, start)
      if (end < 0) return MALFORMED
      if (key === CONN_ID) (connId = start), (connIdEnd = end)
      else if (key === CLOSE_CODE) (closeCode = start), (closeCodeEnd = end)
      else if (key === PUSH_WAKE) (pushWake = start), (pushWakeEnd = end)
      else if (key === FRAME) (frame = start), (frameEnd = end)
      i = skipWs(b, end)
      if (i < n && b[i] === 0x2c) i = skipWs(b, i + 1)
      else if (i < n && b[i] === 0x7d) {
        i++
        break
      } else return MALFORMED
    }
  }
  if (skipWs(b, i) !== n) return MALFORMED

  const hasConnId = connId >= 0 && !isNull(b, connId)
  if (hasConnId && !isString(b, connId)) return MALFORMED
  let code = 0
  if (closeCode >= 0 && !isNull(b, closeCode)) {
    if (!isNumber(b, closeCode)) return MALFORMED
    code = wholeNumberInRange(b, closeCode, closeCodeEnd, 65535)
    if (code < 0) return MALFORMED
  }
  const hasPushWake = pushWake >= 0 && !isNull(b, pushWake)
  if (hasPushWake && !isObject(b, pushWake)) return MALFORMED

  const id = hasConnId ? stringValue(b, connId, connIdEnd) : ""
  if (id === "") return hasPushWake ? { _tag: "Wake", pushWake: b.subarray(pushWake, pushWakeEnd) } : MISSING_CONN_ID
  const hasFrame = frame >= 0 && !isNull(b, frame)
  if (code === 0 && !hasFrame) return MISSING_FRAME
  return { _tag: "Deliver", connId: id, frame: hasFrame ? b.subarray(frame, frameEnd) : undefined, closeCode: code }
}
