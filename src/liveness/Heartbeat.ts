/**
 * Heartbeat (SPEC §6): every `interval` ping the peer; no pong within `timeout` → close 1011
 * `heartbeat timeout`. Runs as a fiber in the connection's scope, so ending the connection
 * cancels it; a cancelled heartbeat never closes anything. Time comes from `Clock`.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import * as Log from "../observability/Log.ts"

export type HeartbeatResult = "timeout" | "closed"

/** Pings forever; returns when the peer missed a pong (after closing it) or the socket is gone. */
export const heartbeat: (
  conn: PeerConnection,
  options: {
    readonly interval: Duration.Duration
    readonly timeout: Duration.Duration
    /** Context for the `heartbeat timeout` log line (SPEC §11). */
    readonly fields?: Log.LogFields
  }
) => Effect.Effect<HeartbeatResult> = Effect.fnUntraced(
  // One generator function for every connection (Effect.gen per call costs a fresh prototype each).
  function*(conn, options) {
    for (;;) {
      yield* Effect.sleep(options.interval)
      const pong = yield* conn.ping.pipe(
        Effect.as("pong" as const),
        Effect.catch(() => Effect.succeed("closed" as const)),
        Effect.timeoutOrElse({ duration: options.timeout, orElse: () => Effect.succeed("timeout" as const) })
      )
      if (pong === "closed") return "closed"
      if (pong === "timeout") {
        yield* Log.info("heartbeat timeout", options.fields)
        yield* conn.close(CloseCodes.HeartbeatTimeout)
        return "timeout"
      }
    }
  }
)
