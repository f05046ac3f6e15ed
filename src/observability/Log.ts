/**
 * The only way the relay logs (SPEC §11). The message is a fixed event name; context goes in
 * annotations whose keys are restricted by the type `LogFields`, so a new key does not compile.
 * Values a peer chose (server-id, device name, version, forwarded address) are cut at 128 UTF-8
 * bytes here, so no call site can forget it; lines a peer's input causes are also limited in
 * number (`PeerWarnings.ts`) by the call sites, which alone know the connection.
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
  | "backlog shed"
  | "push wake dropped"
  | "push wake sent"
  | "push wake failed"
  | "push off"
  | "close code replaced"
  | "rate limited"
  | "connection cap reached"
  | "heartbeat timeout"
  | "write stalled"
  | "session failed"
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
  | "cluster redis up"
  | "cluster redis down"
  | "node lease lapsed"
  | "cluster redis call failed"
  | "cluster batch malformed"
  | "node id in use"
  | "claim lost"

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
  /** Lines of this connection and reason held back since the last one (`PeerWarnings`); omitted when 0. */
  readonly suppressed?: number
  /** First 8 hex of SHA-256(device token): never the token itself (PUSH.md §4). */
  readonly token_fp?: string
  readonly fcm_message_id?: string
  readonly version?: string
  readonly listen?: string
  readonly metrics_listen?: string
  readonly tls?: boolean
  readonly push?: string
  readonly limits?: Readonly<Record<string, string | number | boolean>>
  /** EDGE.md: the configured ACME domain(s), comma-separated; and the boot-time edge settings. */
  readonly domain?: string
  readonly cert_cache?: string
  readonly http_listen?: string
  readonly proxy_protocol?: boolean
  /** CLUSTER.md §1: this node's id (cluster mode). */
  readonly node_id?: string
  /** Boot-time cluster settings: the Redis URL only as `describeRedisUrl` writes it (no password). */
  readonly cluster_redis?: string
  readonly cluster_prefix?: string
  readonly lease_ttl?: string
}

type Level = "Debug" | "Info" | "Warn" | "Error"

/** SPEC §11: a logged server-id or device name longer than this is cut to it and marked `…`. */
export const MAX_PEER_TEXT_BYTES = 128

/**
 * `text` cut to its first 128 UTF-8 bytes plus `…` when longer, never inside a character.
 * A UTF-16 unit is at most 3 UTF-8 bytes, so up to 42 units cannot be too long; and 129 units are
 * at least 129 bytes, so encoding that many is enough to find the cut.
 */
export const cutPeerText = (text: string): string => {
  if (text.length <= 42) return text
  const head = Buffer.from(text.length > MAX_PEER_TEXT_BYTES ? text.slice(0, MAX_PEER_TEXT_BYTES + 1) : text, "utf8")
  if (head.length <= MAX_PEER_TEXT_BYTES) return text
  let end = MAX_PEER_TEXT_BYTES
  while (end > 0 && (head[end]! & 0xc0) === 0x80) end-- // back to the first byte of a character
  return `${head.toString("utf8", 0, end)}…`
}

/**
 * `client-<server-id>-<8 hex>` / `server-<server-id>-<8 hex>` with the server-id part cut like
 * `server_id`: the prefix and the suffix that tells connections apart stay whole.
 */
const cutConnId = (connId: string): string =>
  connId.length <= 7 + 42 + 9 ? connId : `${connId.slice(0, 7)}${cutPeerText(connId.slice(7, -9))}${connId.slice(-9)}`

const PEER_TEXT_KEYS = ["server_id", "device_name", "binary_version", "remote"] as const
const CONN_ID_KEYS = ["conn_id", "binary_conn_id"] as const

const annotations = (fields: LogFields): Record<string, unknown> => {
  const out: Record<string, unknown> = { ...fields }
  for (const key of PEER_TEXT_KEYS) {
    const value = fields[key]
    if (value !== undefined) out[key] = cutPeerText(value)
  }
  for (const key of CONN_ID_KEYS) {
    const value = fields[key]
    if (value !== undefined) out[key] = cutConnId(value)
  }
  if (fields.suppressed === 0) delete out.suppressed
  return out
}

const log = (level: Level) => (event: LogEvent, fields: LogFields = {}): Effect.Effect<void> => {
  const line = level === "Debug"
    ? Effect.logDebug(event)
    : level === "Info"
    ? Effect.logInfo(event)
    : level === "Warn"
    ? Effect.logWarning(event)
    : Effect.logError(event)
  return Effect.annotateLogs(line, annotations(fields))
}

export const debug = log("Debug")
export const info = log("Info")
export const warn = log("Warn")
export const error = log("Error")
