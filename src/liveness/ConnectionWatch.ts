/**
 * Every timer of one connection, in one fiber with one sleep at a time (SPEC §6, §1.4, §4.3):
 * * **heartbeat**: every `heartbeatInterval` a ping; no pong within `heartbeatTimeout` → close
 *   1011 `heartbeat timeout` (logged);
 * * **write**: while the connection has unflushed bytes it must make flush progress at least
 *   every `writeTimeout`, else it is dead and `onWriteStall` runs;
 * * **message**: a message that has started (its first bytes or first fragment arrived) must
 *   complete within `messageTimeout`, else close 1008. Idle time between messages is unbounded.
 * It reads the adapter's pong count and time stamps (taken from the same `Clock`), so
 * `TestClock` drives all three. Interrupting it (the connection's scope closing) cancels all.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import * as Log from "../observability/Log.ts"

export const MessageTimeout = { code: 1008, reason: "message timeout" } as const

export interface WatchOptions<A> {
  readonly heartbeatInterval: Duration.Duration
  readonly heartbeatTimeout: Duration.Duration
  readonly writeTimeout: Duration.Duration
  readonly messageTimeout: Duration.Duration
  readonly onWriteStall: Effect.Effect<A>
  /** Context for the `heartbeat timeout` log line (SPEC §11). */
  readonly fields?: Log.LogFields
}

export type WatchResult = "heartbeat timeout" | "message timeout" | "write stalled" | "closed"

/** Returns after acting on the first deadline missed (or once the socket is gone). */
export const watchConnection: <A>(conn: PeerConnection, options: WatchOptions<A>) => Effect.Effect<WatchResult> =
  Effect.fnUntraced(function*<A>(conn: PeerConnection, options: WatchOptions<A>) {
    const interval = Duration.toMillis(options.heartbeatInterval)
    const pongWindow = Duration.toMillis(options.heartbeatTimeout)
    const writeLimit = Duration.toMillis(options.writeTimeout)
    const messageLimit = Duration.toMillis(options.messageTimeout)
    let nextPingAt = (yield* Clock.currentTimeMillis) + interval
    /** Set while a ping waits for its pong: when it was sent, and the pong count then. */
    let pingSentAt: number | undefined
    let pongsAtPing = 0
    for (;;) {
      if (!conn.isOpen()) return "closed" satisfies WatchResult
      const now = yield* Clock.currentTimeMillis
      if (pingSentAt !== undefined) {
        if (conn.pongs() !== pongsAtPing) pingSentAt = undefined
        else if (now - pingSentAt >= pongWindow) {
          yield* Log.info("heartbeat timeout", options.fields)
          yield* conn.close(CloseCodes.HeartbeatTimeout)
          return "heartbeat timeout" satisfies WatchResult
        }
      }
      if (pingSentAt === undefined && now >= nextPingAt) {
        pongsAtPing = conn.pongs()
        if (!conn.sendPing()) return "closed" satisfies WatchResult
        pingSentAt = now
        nextPingAt = now + interval
      }
      const started = conn.messageStartedAt()
      if (started !== undefined && now - started >= messageLimit) {
        yield* conn.close(MessageTimeout)
        return "message timeout" satisfies WatchResult
      }
      const pending = conn.pendingBytes() > 0
      if (pending && now - conn.lastProgressAt() >= writeLimit) {
        yield* options.onWriteStall
        return "write stalled" satisfies WatchResult
      }
      const untilHeartbeat = pingSentAt === undefined
        ? nextPingAt - now
        : Math.min(pingSentAt + pongWindow, nextPingAt) - now
      const untilMessage = started === undefined ? messageLimit : started + messageLimit - now
      const untilWrite = pending ? conn.lastProgressAt() + writeLimit - now : writeLimit
      yield* Effect.sleep(Duration.millis(Math.max(1, Math.min(untilHeartbeat, untilMessage, untilWrite))))
    }
  })
