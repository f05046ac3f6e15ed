/**
 * One upgraded connection's session, endpoint by endpoint (SPEC §1.2, §1.3): a binary claims its
 * slot, a phone registers, each in the connection's own scope.
 *
 * However the session ends, a connection it did not see end is closed and gone before anything
 * that needs it finished runs (`SessionEnd`: 1011 `internal error` and one `session failed` line
 * after a defect, 1001 when interrupted): during setup by the setup's exit handler, afterwards by
 * the releases that need it (the phone's close notice and unregistration, the binary's release
 * into grace), which see the session's exit. Nothing wraps the session's long-lived phase: a
 * wrapper would be held for the connection's whole life (~0.1–0.3 KB each, docs/performance.md).
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Ledger } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import { RelayConfig } from "../config/RelayConfig.ts"
import type { ConnectionWatcher } from "../liveness/ConnectionWatcher.ts"
import type { Registry } from "../registry/Registry.ts"
import { type BinaryInfo, setUpBinary } from "./BinarySession.ts"
import type { Lifecycle } from "../lifecycle/Lifecycle.ts"
import { type PhoneInfo, setUpPhone } from "./PhoneSession.ts"
import { endConnection, makeLabel, reportFailure } from "./SessionEnd.ts"

/** What a connection's session needs from the relay's context. */
export type SessionServices = RelayConfig | Registry | Ledger | Lifecycle | ConnectionWatcher

/** The header values a session keeps (the gate has checked the required ones are there). */
export type SessionStart =
  | { readonly endpoint: "server"; readonly info: BinaryInfo }
  | { readonly endpoint: "client"; readonly info: PhoneInfo }

/**
 * Sets the session up and returns its long-lived phase (no generator frame stays suspended for
 * the connection's life). A setup that fails ends the connection here; once set up, the
 * registration's or claim's release does (it needs the connection finished first anyway), and
 * the remaining phases (a rejected connection waiting for its close) have nothing left to end.
 */
const setUpSession = Effect.fnUntraced(function*(
  start: SessionStart,
  connection: Effect.Effect<PeerConnection, never, Scope.Scope>
) {
  const config = yield* RelayConfig
  const label = makeLabel(start.endpoint, start.info.serverId)
  // The adapter destroys a socket it could not wrap; the defect is reported here.
  const conn = yield* Effect.tapDefect(connection, () => reportFailure(label, "session setup died"))
  const setUp: Effect.Effect<Effect.Effect<void>, never, SessionServices | Scope.Scope> = start.endpoint === "server"
    ? setUpBinary(conn, start.info, label)
    : setUpPhone(conn, start.info, label)
  return yield* Effect.onExit(setUp, (exit) => endConnection(conn, label, exit, config.closeTimeout))
})

/** Runs the session of the connection `connection` acquires, in a scope of its own. */
export const run = (
  start: SessionStart,
  connection: Effect.Effect<PeerConnection, never, Scope.Scope>
): Effect.Effect<void, never, SessionServices> => Effect.scoped(Effect.flatten(setUpSession(start, connection)))
