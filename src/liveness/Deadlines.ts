/**
 * The two per-connection deadlines, in one fiber with one timer (SPEC §1.4, §4.3):
 * * **write**: while the connection has unflushed bytes it must make flush progress at least
 *   every `writeTimeout`, else it is dead and `onWriteStall` runs;
 * * **message**: a message that has started (its first bytes or first fragment arrived) must
 *   complete within `messageTimeout`, else close 1008. Idle time between messages is unbounded.
 * Both read the adapter's stamps, taken from the same `Clock`, so `TestClock` drives them.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { PeerConnection } from "../connection/PeerConnection.ts"

export const MessageTimeout = { code: 1008, reason: "message timeout" } as const

export interface DeadlineOptions<A> {
  readonly writeTimeout: Duration.Duration
  readonly messageTimeout: Duration.Duration
  readonly onWriteStall: Effect.Effect<A>
}

/** Returns after acting on the first deadline missed; runs until interrupted otherwise. */
export const watchDeadlines: <A>(conn: PeerConnection, options: DeadlineOptions<A>) => Effect.Effect<A | void> = Effect
  .fnUntraced(function*<A>(conn: PeerConnection, options: DeadlineOptions<A>) {
    const writeLimit = Duration.toMillis(options.writeTimeout)
    const messageLimit = Duration.toMillis(options.messageTimeout)
    for (;;) {
      const now = yield* Clock.currentTimeMillis
      const started = conn.messageStartedAt()
      if (started !== undefined && now - started >= messageLimit) return yield* conn.close(MessageTimeout)
      const pending = conn.pendingBytes() > 0
      if (pending && now - conn.lastProgressAt() >= writeLimit) return yield* options.onWriteStall
      const untilMessage = started === undefined ? messageLimit : started + messageLimit - now
      const untilWrite = pending ? conn.lastProgressAt() + writeLimit - now : writeLimit
      yield* Effect.sleep(Duration.millis(Math.max(1, Math.min(untilMessage, untilWrite))))
    }
  })
