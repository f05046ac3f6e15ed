/**
 * Write deadline (SPEC §1.4, §4.3): while a connection has unflushed bytes, it must make flush
 * progress at least every `timeout`; otherwise it is dead and `onStall` runs. Reads the
 * connection's progress time, which the adapter stamps from the same `Clock`.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { PeerConnection } from "../connection/PeerConnection.ts"

export const watchWrites: <A>(
  conn: PeerConnection,
  timeout: Duration.Duration,
  onStall: Effect.Effect<A>
) => Effect.Effect<A> = Effect.fnUntraced(function*<A>(
  conn: PeerConnection,
  timeout: Duration.Duration,
  onStall: Effect.Effect<A>
) {
    const limit = Duration.toMillis(timeout)
    for (;;) {
      if (conn.pendingBytes() === 0) {
        yield* Effect.sleep(timeout)
        continue
      }
      const idle = (yield* Clock.currentTimeMillis) - conn.lastProgressAt()
      if (idle >= limit) return yield* onStall
      yield* Effect.sleep(Duration.millis(limit - idle))
    }
  })
