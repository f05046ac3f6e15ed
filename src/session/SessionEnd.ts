/**
 * How a session ends when it did not see its connection end (SPEC §6, §10, §11). A body that died
 * with a defect (a bug: a throw in a forwarder, a finalizer) must not fail silently nor leave its
 * connection open: the connection is closed 1011 `internal error` and the session logged once as
 * `session failed` (error level). A body interrupted (the relay stopping) closes it 1001
 * `shutting down`. Either way the connection is waited for — and destroyed if the peer does not
 * answer within the close timeout — before the session's releases that need a finished
 * connection (the phone's close notice, the binary's grace) go on.
 *
 * The `session failed` line carries the connection's ids and a fixed description of where it
 * died, never the defect itself, whose message may quote a frame (SPEC §2.6).
 *
 * It runs in a failed setup's exit handler or in the connection scope's finalizers; there it
 * cannot lean on fibers forked into that scope (a closing scope starts none), so its close
 * timeout is its own.
 */
import * as Cause from "effect/Cause"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
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
  /** Set once the connection was ended after a failure: the session's later finalizers skip it. */
  ended: boolean
}

export const makeLabel = (endpoint: Endpoint, serverId: string): SessionLabel => ({
  endpoint,
  serverId,
  connId: undefined,
  reported: false,
  ended: false
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

/** Waits until the connection is gone; a peer that does not answer within `timeout` is destroyed. */
const untilGone = (conn: PeerConnection, timeout: Duration.Duration): Effect.Effect<void> =>
  Effect.flatMap(
    Effect.timeoutOption(conn.closed, timeout),
    (closed) => (Option.isSome(closed) ? Effect.void : Effect.andThen(conn.terminate, conn.closed))
  )

/**
 * The session's body ended with `exit`. After a failure the connection is closed (1011 and
 * reported for a defect, 1001 for an interruption) and waited for; after a normal end the body
 * saw it gone already. Once per session: a failed setup calls it, and so do the releases that
 * need a finished connection.
 */
export const endConnection = (
  conn: PeerConnection,
  label: SessionLabel,
  exit: Exit.Exit<unknown, unknown>,
  closeTimeout: Duration.Duration
): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (Exit.isSuccess(exit) || label.ended) return Effect.void
    label.ended = true
    const close = Cause.hasInterruptsOnly(exit.cause)
      ? conn.close(CloseCodes.ShuttingDown)
      : Effect.andThen(reportFailure(label, "session died"), conn.close(CloseCodes.InternalError))
    return Effect.andThen(close, untilGone(conn, closeTimeout))
  })

/** A release that dies is reported (once per session) and goes no further; the session still ends. */
export const guardTeardown = (label: SessionLabel, release: Effect.Effect<void>): Effect.Effect<void> =>
  Effect.catchDefect(release, () => reportFailure(label, "session teardown died"))
