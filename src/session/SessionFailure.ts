/**
 * A session that ends by a defect (a bug: a throw in a forwarder, the outbox writer, a
 * finalizer) must not fail silently nor leave its connection open: it is closed 1011
 * `internal error` and logged once as `session failed` (error level). The line carries the
 * connection's ids and a fixed description of where it died — never the defect itself, whose
 * message may quote a frame (SPEC §2.6, §11).
 */
import * as Effect from "effect/Effect"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import * as Log from "../observability/Log.ts"
import type { Endpoint } from "../observability/Metrics.ts"

/** Where a session died: a fixed description, the `error` of its `session failed` line. */
export type SessionError =
  | "session died"
  | "outbox writer died"
  | "session setup died"
  | "session teardown died"

/** What a `session failed` line says about its connection; the conn_id is filled in once issued. */
export interface SessionLabel {
  readonly endpoint: Endpoint
  readonly serverId: string
  /** The phone's conn_id, or the binary's `server-…` id. */
  connId: string | undefined
  /** Set once the line was written: one per session, whatever else dies after. */
  reported: boolean
}

export const makeLabel = (endpoint: Endpoint, serverId: string): SessionLabel => ({
  endpoint,
  serverId,
  connId: undefined,
  reported: false
})

const fieldsOf = (label: SessionLabel, error: SessionError): Log.LogFields => {
  const id = label.connId === undefined
    ? {}
    : label.endpoint === "server"
    ? { binary_conn_id: label.connId }
    : { conn_id: label.connId }
  return { server_id: label.serverId, ...id, endpoint: label.endpoint, error }
}

/** Writes the session's one `session failed` line (later calls write nothing). */
export const reportFailure = (label: SessionLabel, error: SessionError): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (label.reported) return Effect.void
    label.reported = true
    return Log.error("session failed", fieldsOf(label, error))
  })

/** A defect ended the session: reported once, and the connection closed 1011 `internal error`. */
export const failSession = (conn: PeerConnection, label: SessionLabel, error: SessionError): Effect.Effect<void> =>
  Effect.andThen(reportFailure(label, error), conn.close(CloseCodes.InternalError))
