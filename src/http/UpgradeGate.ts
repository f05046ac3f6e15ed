/**
 * The header gate of the WebSocket endpoints (SPEC §1.2, §1.3): exact-path routing and the
 * required headers, checked before any upgrade. Pure; header values are only tested for
 * presence, never returned, logged or echoed.
 */
import type { Endpoint } from "../observability/Metrics.ts"

export type Headers = Readonly<Record<string, string | ReadonlyArray<string> | undefined>>

const REQUIRED: Record<Endpoint, ReadonlyArray<string>> = {
  server: ["x-pyrycode-server", "x-pyrycode-version", "user-agent"],
  client: ["x-pyrycode-server", "x-pyrycode-token", "user-agent"]
}

/** The request target's path, without the query string. */
export const pathOf = (url: string | undefined): string => {
  if (url === undefined) return ""
  const query = url.indexOf("?")
  return query === -1 ? url : url.slice(0, query)
}

/** `/v1/server` → binary, `/v1/client` → phone; anything else is not a WebSocket endpoint. */
export const endpointOf = (path: string): Endpoint | undefined =>
  path === "/v1/server" ? "server" : path === "/v1/client" ? "client" : undefined

/** Non-empty (whitespace-only counts as non-empty; no trimming, no charset check). */
const present = (value: string | ReadonlyArray<string> | undefined): value is string =>
  typeof value === "string" && value.length > 0

/** Whether every required header of the endpoint is present and non-empty. */
export const hasRequiredHeaders = (endpoint: Endpoint, headers: Headers): boolean =>
  REQUIRED[endpoint].every((name) => present(headers[name]))

/** A header value the gate has already checked, as one string. */
export const headerValue = (headers: Headers, name: string): string | undefined => {
  const value = headers[name]
  return typeof value === "string" ? value : undefined
}
