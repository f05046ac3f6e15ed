/**
 * The gate of the WebSocket endpoints (SPEC §1.2, §1.3): exact-path routing, the required
 * headers, and the RFC 6455 §4.2.1 handshake checks, all before any upgrade. Pure; header
 * values are only tested, never returned in an answer, logged or echoed.
 *
 * Headers come as Node's `headersDistinct` (every line of a name, in order): `headers` joins
 * repeated lines with ", " (two empty `X-Pyrycode-Server:` lines would read as the server-id
 * ", ") or silently keeps the first (`User-Agent`, `Host`), and the relay must never join or
 * pick among repeated values.
 */
import type { Endpoint } from "../observability/Metrics.ts"
export { pathOf } from "./RequestPath.ts"

/** Every line of each header name (lower-case), as `IncomingMessage.headersDistinct`. */
export type DistinctHeaders = Readonly<Record<string, ReadonlyArray<string> | undefined>>

const REQUIRED: Record<Endpoint, ReadonlyArray<string>> = {
  server: ["x-pyrycode-server", "x-pyrycode-version", "user-agent"],
  client: ["x-pyrycode-server", "x-pyrycode-token", "user-agent"]
}

/** Optional headers whose value the relay keeps (logs): at most one line. */
const OPTIONAL: Record<Endpoint, ReadonlyArray<string>> = {
  server: [],
  client: ["x-pyrycode-device-name"]
}

/** `/v1/server` → binary, `/v1/client` → phone; anything else is not a WebSocket endpoint. */
export const endpointOf = (path: string): Endpoint | undefined =>
  path === "/v1/server" ? "server" : path === "/v1/client" ? "client" : undefined

/** The value of a header sent exactly once; `undefined` when missing or repeated. */
const single = (headers: DistinctHeaders, name: string): string | undefined => {
  const lines = headers[name]
  return lines?.length === 1 ? lines[0] : undefined
}

/**
 * Whether every required header of the endpoint is sent exactly once with a non-empty value
 * (whitespace-only counts as non-empty; no trimming, no charset check), and no optional header
 * the relay keeps is repeated. Failing this is the header gate's 400 (§1.2 step 3).
 */
export const hasRequiredHeaders = (endpoint: Endpoint, headers: DistinctHeaders): boolean =>
  REQUIRED[endpoint].every((name) => (single(headers, name)?.length ?? 0) > 0) &&
  OPTIONAL[endpoint].every((name) => (headers[name]?.length ?? 0) <= 1)

/** A header value the gate has already checked (sent once), as one string. */
export const headerValue = (headers: DistinctHeaders, name: string): string | undefined => single(headers, name)

/** What the handshake checks read of a request. */
export interface HandshakeRequest {
  readonly method?: string | undefined
  /** `IncomingMessage.httpVersion`: `"1.1"` for `HTTP/1.1`. */
  readonly httpVersion: string
  readonly headersDistinct: DistinctHeaders
}

/** RFC 6455 §4.1: the base64 of 16 bytes. */
const KEY = /^[+/0-9A-Za-z]{22}==$/

/**
 * The status refusing an invalid WebSocket handshake (§1.2 step 4, RFC 6455 §4.2.1), or
 * `undefined` when it is valid: not HTTP/1.1 → 400; not GET → 405; `Host` missing, empty or
 * repeated → 400; `Upgrade` not exactly one `websocket` (any case) → 400; `Sec-WebSocket-Key`
 * not exactly one valid key → 400; `Sec-WebSocket-Version` not exactly one line reading `13` →
 * 426 (so `8`, `013`, `13.0`, `0xd`, a missing or a repeated version all get 426). Node has
 * already required `Connection: upgrade` for the request to reach the upgrade handler.
 */
export const handshakeRefusal = (req: HandshakeRequest): 400 | 405 | 426 | undefined => {
  const headers = req.headersDistinct
  if (req.httpVersion !== "1.1") return 400
  if (req.method !== "GET") return 405
  if ((single(headers, "host")?.length ?? 0) === 0) return 400
  if (single(headers, "upgrade")?.toLowerCase() !== "websocket") return 400
  const key = single(headers, "sec-websocket-key")
  if (key === undefined || !KEY.test(key)) return 400
  if (single(headers, "sec-websocket-version") !== "13") return 426
  return undefined
}
