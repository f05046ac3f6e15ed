/**
 * One upgraded connection's session, endpoint by endpoint (SPEC §1.2, §1.3): a binary claims its
 * slot, a phone registers, each in the connection's own scope.
 *
 * However the session's body ends, its connection is closed and gone before the scope's
 * finalizers run (the phone's close notice and unregistration, the binary's release into grace),
 * so those see a finished connection, as on any disconnect: a body that died with a defect closes
 * it 1011 `internal error` (reported once as `session failed`), an interrupted one (shutdown)
 * closes it 1001 `shutting down`. A body that ended normally saw its socket gone already. The
 * connection's close is bounded by the close timeout (`PeerConnection.close`: a peer that does not
 * answer is destroyed), so waiting for it never holds a session forever.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Scope from "effect/Scope"
import type { Ledger } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import type { RelayConfig } from "../config/RelayConfig.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import type { ConnectionWatcher } from "../liveness/ConnectionWatcher.ts"
import type { Registry } from "../registry/Registry.ts"
import { type BinaryInfo, runBinary } from "./BinarySession.ts"
import type { Lifecycle } from "./Lifecycle.ts"
import { type PhoneInfo, runPhone } from "./PhoneSession.ts"
import { failSession, makeLabel, reportFailure, type SessionLabel } from "./SessionFailure.ts"

/** What a connection's session needs from the relay's context. */
export type SessionServices = RelayConfig | Registry | Ledger | Lifecycle | ConnectionWatcher

/** The header values a session keeps (the gate has checked the required ones are there). */
export type SessionStart =
  | { readonly endpoint: "server"; readonly info: BinaryInfo }
  | { readonly endpoint: "client"; readonly info: PhoneInfo }

/** After the body: a connection the session did not see end is closed, and waited for. */
const bodyEnded = (conn: PeerConnection, label: SessionLabel, exit: Exit.Exit<void>): Effect.Effect<void> => {
  if (Exit.isSuccess(exit)) return Effect.void
  const closing = Cause.hasDies(exit.cause)
    ? failSession(conn, label, "session died")
    : conn.close(CloseCodes.ShuttingDown)
  return Effect.andThen(closing, conn.closed)
}

/** The body's defect is handled (closed, reported) here; what is left to end is the scope. */
const supervised = (
  conn: PeerConnection,
  label: SessionLabel,
  body: Effect.Effect<void, never, SessionServices | Scope.Scope>
) => Effect.catchDefect(Effect.onExit(body, (exit) => bodyEnded(conn, label, exit)), () => Effect.void)

/**
 * Runs the session of the connection `connection` acquires, in a scope of its own. A defect in
 * the acquisition or in a finalizer is reported too (once per session), never escapes.
 */
export const run = (
  start: SessionStart,
  connection: Effect.Effect<PeerConnection, never, Scope.Scope>
): Effect.Effect<void, never, SessionServices> => {
  const label = makeLabel(start.endpoint, start.info.serverId)
  let acquired = false
  return Effect.catchDefect(
    Effect.scoped(Effect.flatMap(connection, (conn) => {
      acquired = true
      return supervised(
        conn,
        label,
        start.endpoint === "server" ? runBinary(conn, start.info, label) : runPhone(conn, start.info, label)
      )
    })),
    () => reportFailure(label, acquired ? "session teardown died" : "session setup died")
  )
}
