/**
 * One upgraded connection's session, endpoint by endpoint (SPEC §1.2, §1.3): a binary claims its
 * slot, a phone registers, each in the connection's own scope.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Ledger } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import type { RelayConfig } from "../config/RelayConfig.ts"
import type { ConnectionWatcher } from "../liveness/ConnectionWatcher.ts"
import type { Registry } from "../registry/Registry.ts"
import { type BinaryInfo, runBinary } from "./BinarySession.ts"
import type { Lifecycle } from "./Lifecycle.ts"
import { type PhoneInfo, runPhone } from "./PhoneSession.ts"

/** What a connection's session needs from the relay's context. */
export type SessionServices = RelayConfig | Registry | Ledger | Lifecycle | ConnectionWatcher

/** The header values a session keeps (the gate has checked the required ones are there). */
export type SessionStart =
  | { readonly endpoint: "server"; readonly info: BinaryInfo }
  | { readonly endpoint: "client"; readonly info: PhoneInfo }

/** Runs the session of the connection `connection` acquires, in a scope of its own. */
export const run = (
  start: SessionStart,
  connection: Effect.Effect<PeerConnection, never, Scope.Scope>
): Effect.Effect<void, never, SessionServices> =>
  Effect.scoped(Effect.flatMap(
    connection,
    (conn): Effect.Effect<void, never, SessionServices | Scope.Scope> =>
      start.endpoint === "server" ? runBinary(conn, start.info) : runPhone(conn, start.info)
  ))
