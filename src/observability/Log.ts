/**
 * The only way the relay logs (SPEC §11). The message is a fixed event name; context goes in
 * annotations whose keys are restricted by the type `LogFields`, so a new key does not compile.
 *
 * Never pass frame or envelope bytes, a token, a User-Agent or a header set here.
 */
import * as Effect from "effect/Effect"

export type LogEvent =
  | "server claimed"
  | "server id conflict"
  | "server takeover"
  | "server released"
  | "grace reclaimed"
  | "grace expired"
  | "phone registered"
  | "phone unregistered"
  | "phone rejected"
  | "phone closed by binary"
  | "envelope dropped"
  | "frame dropped"
  | "push wake dropped"
  | "close code replaced"
  | "rate limited"
  | "connection cap reached"
  | "heartbeat timeout"
  | "write stalled"
  | "relay started"
  | "shutdown started"
  | "shutdown complete"
  | "drain incomplete"
  | "proxy header refused"
  | "certificate loaded"
  | "certificate issued"
  | "certificate order failed"
  | "certificate cache tightened"
  | "certificate cache ignored"
  | "certificate cache write failed"

/** The allowlisted annotation keys (SPEC §11), plus boot-time config keys. */
export interface LogFields {
  readonly server_id?: string
  readonly conn_id?: string
  readonly binary_conn_id?: string
  readonly device_name?: string
  readonly remote?: string
  readonly binary_version?: string
  readonly close_code?: number
  readonly reason?: string
  readonly path?: string
  readonly endpoint?: string
  readonly duration?: string
  readonly error?: string
  readonly version?: string
  readonly listen?: string
  readonly metrics_listen?: string
  readonly tls?: boolean
  readonly limits?: Readonly<Record<string, string | number | boolean>>
  /** EDGE.md: the configured ACME domain(s), comma-separated; and the boot-time edge settings. */
  readonly domain?: string
  readonly cert_cache?: string
  readonly http_listen?: string
  readonly proxy_protocol?: boolean
}

type Level = "Debug" | "Info" | "Warn" | "Error"

const log = (level: Level) => (event: LogEvent, fields: LogFields = {}): Effect.Effect<void> => {
  const line = level === "Debug"
    ? Effect.logDebug(event)
    : level === "Info"
    ? Effect.logInfo(event)
    : level === "Warn"
    ? Effect.logWarning(event)
    : Effect.logError(event)
  return Effect.annotateLogs(line, fields as Record<string, unknown>)
}

export const debug = log("Debug")
export const info = log("Info")
export const warn = log("Warn")
export const error = log("Error")
