/**
 * Conflict liveness probe (SPEC §3.3): ping the incumbent and wait up to `timeout` for a pong.
 * A live incumbent always answers in time — its reader never blocks on a phone (§4.2).
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { PeerConnection } from "../connection/PeerConnection.ts"

/** `true` when the incumbent answered; `false` on timeout or when the ping failed. */
export const probe = (incumbent: PeerConnection, timeout: Duration.Duration): Effect.Effect<boolean> =>
  incumbent.ping.pipe(
    Effect.as(true),
    Effect.catch(() => Effect.succeed(false)),
    Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.succeed(false) })
  )
