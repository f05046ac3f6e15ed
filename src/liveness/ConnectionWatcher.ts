/**
 * Every timer of every connection, in one relay-wide fiber (SPEC §6, §1.4, §4.3). Per watched
 * connection:
 * * **heartbeat**: every `heartbeatInterval` a ping; no pong within `heartbeatTimeout` → close
 *   1011 `heartbeat timeout` (logged);
 * * **write**: while the connection has unflushed bytes it must make flush progress at least
 *   every `writeTimeout`, else it is dead and `onWriteStall` runs;
 * * **message**: a message that has started (its first bytes or first fragment arrived) must
 *   complete within `messageTimeout`, else close 1008. Idle time between messages is unbounded.
 * An entry acts on the first deadline it misses and is then dropped; it is also dropped once its
 * socket is gone, and when the scope that `watch` ran in closes (the session ending).
 *
 * Why one fiber: a sleeping fiber per connection costs ~1 KB of heap plus its generator and
 * closures; here a watched connection costs one plain `Entry` and a slot in two arrays. The fiber
 * wakes on every `TICK` boundary of clock time (multiples of 100 ms) while anything is watched,
 * and waits without a timer while nothing is. Each entry has a due time, the earliest instant any
 * of its deadlines can be missed, so a tick reads one number per entry that is not due and calls
 * `check` only for those that are. Deadlines are acted on at the first tick at or after them:
 * never early, at most one tick late, and exactly on time when they fall on a tick boundary
 * (whole seconds under `TestClock`).
 *
 * Time comes from `Clock` only (the adapter stamps progress and message starts from the same
 * clock), so `TestClock` drives all three. An action (log + close, `onWriteStall`) runs in its own
 * fiber, forked from the watcher with the context `watch` was called in, so a slow or failing one
 * never stops or delays the others.
 *
 * State ownership: the arrays and each `Entry`'s fields belong to `makeConnectionWatcher`; adding,
 * removing and the scan are synchronous, so none of them ever sees another half done.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import * as Log from "../observability/Log.ts"

export const MessageTimeout = { code: 1008, reason: "message timeout" } as const

/** Resolution of every deadline: the watcher checks due entries on multiples of this. */
const TICK: Duration.Duration = Duration.millis(100)

export interface WatchOptions<A> {
  readonly heartbeatInterval: Duration.Duration
  readonly heartbeatTimeout: Duration.Duration
  readonly writeTimeout: Duration.Duration
  readonly messageTimeout: Duration.Duration
  /** What a write stall does; built only when one happens (nothing per idle connection). */
  readonly onWriteStall: () => Effect.Effect<A>
  /** Context for the `heartbeat timeout` log line (SPEC §11). */
  readonly fields?: Log.LogFields
}

/** The four deadlines, as the relay's configuration holds them. */
export type WatchTiming = Pick<WatchOptions<unknown>, "heartbeatInterval" | "heartbeatTimeout" | "writeTimeout" | "messageTimeout">

/** A session's watch options: the relay's deadlines, its log fields and what a write stall does. */
export const watchOptions = <A>(
  timing: WatchTiming,
  fields: Log.LogFields,
  onWriteStall: () => Effect.Effect<A>
): WatchOptions<A> => ({
  heartbeatInterval: timing.heartbeatInterval,
  heartbeatTimeout: timing.heartbeatTimeout,
  writeTimeout: timing.writeTimeout,
  messageTimeout: timing.messageTimeout,
  fields,
  onWriteStall
})

type WatchResult = "heartbeat timeout" | "message timeout" | "write stalled" | "closed"

/** One watched connection: all it costs while it is idle. */
interface Entry {
  readonly conn: PeerConnection
  readonly options: WatchOptions<unknown>
  /** The context `watch` ran in: its action runs with the same loggers, metrics and clock. */
  readonly context: Context.Context<never>
  /** Its slot in the watcher's arrays; -1 once removed. */
  index: number
  nextPingAt: number
  /** Set while a ping waits for its pong: when it was sent, and the pong count then. */
  pingSentAt: number | undefined
  pongsAtPing: number
}

/**
 * One look at one connection at `now`: sends the ping when it is time and returns the deadline
 * missed (or `"closed"`), else the next instant anything can be missed (its next `due`). A message
 * start or a send that made bytes pending can happen between looks; the next look is never
 * further than the message or write limit away, so such a deadline is still looked at in time.
 */
const check = (entry: Entry, now: number): WatchResult | number => {
  const { conn, options } = entry
  if (!conn.isOpen()) return "closed"
  const pongWindow = Duration.toMillis(options.heartbeatTimeout)
  const messageLimit = Duration.toMillis(options.messageTimeout)
  const writeLimit = Duration.toMillis(options.writeTimeout)
  if (entry.pingSentAt !== undefined) {
    if (conn.pongs() !== entry.pongsAtPing) entry.pingSentAt = undefined
    else if (now - entry.pingSentAt >= pongWindow) return "heartbeat timeout"
  }
  if (entry.pingSentAt === undefined && now >= entry.nextPingAt) {
    entry.pongsAtPing = conn.pongs()
    if (!conn.sendPing()) return "closed"
    entry.pingSentAt = now
    entry.nextPingAt = now + Duration.toMillis(options.heartbeatInterval)
  }
  const started = conn.messageStartedAt()
  if (started !== undefined && now - started >= messageLimit) return "message timeout"
  const pending = conn.pendingBytes() > 0
  if (pending && now - conn.lastProgressAt() >= writeLimit) return "write stalled"
  const heartbeatAt = entry.pingSentAt === undefined
    ? entry.nextPingAt
    : Math.min(entry.pingSentAt + pongWindow, entry.nextPingAt)
  const messageAt = started === undefined ? now + messageLimit : started + messageLimit
  const writeAt = pending ? conn.lastProgressAt() + writeLimit : now + writeLimit
  return Math.min(heartbeatAt, messageAt, writeAt)
}

const action = (entry: Entry, result: WatchResult): Effect.Effect<unknown> | undefined => {
  switch (result) {
    case "heartbeat timeout":
      return Effect.andThen(
        Log.info("heartbeat timeout", entry.options.fields),
        entry.conn.close(CloseCodes.HeartbeatTimeout)
      )
    case "message timeout":
      return entry.conn.close(MessageTimeout)
    case "write stalled":
      // Built inside the action's own fiber: a throwing builder never reaches the watcher.
      return Effect.suspend(entry.options.onWriteStall)
    case "closed":
      return undefined
  }
}

export interface ConnectionWatcherShape {
  /**
   * Watches `conn` until it misses a deadline, its socket is gone, or the current scope closes
   * (whichever comes first). The heartbeat's first ping is due one interval from now.
   */
  readonly watch: <A>(conn: PeerConnection, options: WatchOptions<A>) => Effect.Effect<void, never, Scope.Scope>
  /** Connections being watched (for tests and diagnostics). */
  readonly size: () => number
}

/** Builds the watcher and forks its one fiber into the current scope. */
export const makeConnectionWatcher: Effect.Effect<ConnectionWatcherShape, never, Scope.Scope> = Effect.gen(
  function*() {
    const clock = yield* Clock.Clock
    const tick = Duration.toMillis(TICK)
    // Slot i holds one entry and its due time: the clock time (ms) before which none of its
    // deadlines can be missed. The due times sit apart in one flat array so that a tick reads
    // 8 contiguous bytes per entry that is not due, and touches only the entries that are.
    // Removal moves the last slot into the hole. `dues` grows by doubling and never shrinks.
    const entries: Array<Entry> = []
    let dues = new Float64Array(1024)
    /** Set while the watcher waits for a first entry. */
    let wakeup: Deferred.Deferred<void> | undefined

    const remove = (entry: Entry): void => {
      const index = entry.index
      if (index < 0) return
      entry.index = -1
      const last = entries.pop()!
      if (last === entry) return
      entries[index] = last
      dues[index] = dues[entries.length]!
      last.index = index
    }

    /** Looks at every due entry; returns those that acted, already removed. */
    const scan = (now: number): Array<readonly [Entry, WatchResult]> | undefined => {
      let acted: Array<readonly [Entry, WatchResult]> | undefined
      let i = 0
      while (i < entries.length) {
        if (now < dues[i]!) {
          i++
          continue
        }
        const entry = entries[i]!
        let result: WatchResult | number
        // An adapter that throws loses its own watch, never everyone else's.
        try {
          result = check(entry, now)
        } catch {
          result = "closed"
        }
        if (typeof result === "number") {
          dues[i] = result
          i++
          continue
        }
        remove(entry) // slot i now holds the former last entry, not looked at yet
        acted ??= []
        acted.push([entry, result])
      }
      return acted
    }

    yield* Effect.forkScoped(Effect.gen(function*() {
      for (;;) {
        if (entries.length === 0) {
          const signal = Deferred.makeUnsafe<void>()
          wakeup = signal
          yield* Deferred.await(signal)
        }
        yield* Effect.sleep(tick - (clock.currentTimeMillisUnsafe() % tick))
        const acted = scan(clock.currentTimeMillisUnsafe())
        if (acted === undefined) continue
        for (const [entry, result] of acted) {
          const effect = action(entry, result)
          if (effect !== undefined) yield* Effect.forkChild(Effect.provideContext(effect, entry.context))
        }
      }
    }))

    const add = <A>(conn: PeerConnection, options: WatchOptions<A>, context: Context.Context<never>): Entry => {
      const now = clock.currentTimeMillisUnsafe()
      const entry: Entry = {
        conn,
        options,
        context,
        index: entries.length,
        nextPingAt: now + Duration.toMillis(options.heartbeatInterval),
        pingSentAt: undefined,
        pongsAtPing: 0
      }
      if (entry.index === dues.length) {
        const grown = new Float64Array(dues.length * 2)
        grown.set(dues)
        dues = grown
      }
      entries.push(entry)
      dues[entry.index] = now // looked at on the next tick
      if (wakeup !== undefined) {
        Deferred.doneUnsafe(wakeup, Effect.void)
        wakeup = undefined
      }
      return entry
    }

    return ConnectionWatcher.of({
      watch: (conn, options) =>
        Effect.asVoid(Effect.acquireRelease(
          Effect.map(Effect.context<never>(), (context) => add(conn, options, context)),
          (entry) => Effect.sync(() => remove(entry))
        )),
      size: () => entries.length
    })
  }
)

export class ConnectionWatcher extends Context.Service<ConnectionWatcher, ConnectionWatcherShape>()(
  "pyrycode-relay/ConnectionWatcher"
) {
  /** The watcher fiber lives as long as the layer. */
  static readonly layer = Layer.effect(ConnectionWatcher, makeConnectionWatcher)
}
