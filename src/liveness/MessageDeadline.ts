/**
 * Message completion deadline (SPEC §1.4): a message that has started (first fragment or first
 * bytes of a frame) must complete within `timeout`, else close 1008. Idle time between messages
 * is unbounded — that is the heartbeat's job. Time from `Clock`.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { PeerConnection } from "../connection/PeerConnection.ts"

export const MessageTimeout = { code: 1008, reason: "message timeout" } as const

export const watchMessages: (conn: PeerConnection, timeout: Duration.Duration) => Effect.Effect<void> = Effect
  .fnUntraced(function*(conn: PeerConnection, timeout: Duration.Duration) {
    const limit = Duration.toMillis(timeout)
    for (;;) {
      const started = conn.messageStartedAt()
      if (started === undefined) {
        yield* Effect.sleep(timeout)
        continue
      }
      const elapsed = (yield* Clock.currentTimeMillis) - started
      if (elapsed >= limit) return yield* conn.close(MessageTimeout)
      yield* Effect.sleep(Duration.millis(limit - elapsed))
    }
  })
