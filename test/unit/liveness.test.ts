/**
 * Heartbeat, write and message deadlines in the relay-wide connection watcher, and the conflict
 * probe (SPEC §3.3, §1.4, §4.3, §6), all on TestClock.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import type { PeerConnection } from "../../src/connection/PeerConnection.ts"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import { probe } from "../../src/liveness/ConflictProbe.ts"
import {
  type ConnectionWatcherShape,
  makeConnectionWatcher,
  MessageTimeout,
  type WatchOptions
} from "../../src/liveness/ConnectionWatcher.ts"
import { settle } from "../support/Core.ts"
import { makeFakeConnection } from "../support/FakeConnection.ts"

const WRITE_TIMEOUT = Duration.seconds(10)
const FOREVER = Duration.hours(24)
const PROBE_TIMEOUT = Duration.seconds(10)

/** Every deadline off; each test turns on the ones it pins. */
const OFF: WatchOptions<void> = {
  heartbeatInterval: FOREVER,
  heartbeatTimeout: FOREVER,
  writeTimeout: FOREVER,
  messageTimeout: FOREVER,
  onWriteStall: () => Effect.void
}
/** The heartbeat alone, pinging every `seconds` and waiting as long for the pong. */
const heartbeatOf = (seconds: number): WatchOptions<void> => ({
  ...OFF,
  heartbeatInterval: Duration.seconds(seconds),
  heartbeatTimeout: Duration.seconds(seconds)
})
/** SPEC defaults for the heartbeat, the other two deadlines off. */
const HEARTBEAT = heartbeatOf(30)
/** The write deadline alone (10 s). */
const writeDeadline = <A>(onWriteStall: Effect.Effect<A>): WatchOptions<A> => ({
  ...OFF,
  writeTimeout: WRITE_TIMEOUT,
  onWriteStall: () => onWriteStall
})

/**
 * `watcher.watch` in a scope of its own, as a session does; `stop` closes that scope (the session
 * ending).
 */
const watchIn = <A>(watcher: ConnectionWatcherShape, conn: PeerConnection, options: WatchOptions<A>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Scope.provide(scope)(watcher.watch(conn, options))
    return { stop: Scope.close(scope, Exit.void) }
  })

/** A fresh watcher in the test's scope and one connection watched with `options`. */
const watchOne = <A>(conn: PeerConnection, options: WatchOptions<A>) =>
  Effect.gen(function*() {
    const watcher = yield* makeConnectionWatcher
    const { stop } = yield* watchIn(watcher, conn, options)
    return { watcher, stop }
  })

/** The write deadline alone, counting `onWriteStall` runs. */
const writeWatch = (conn: PeerConnection) =>
  Effect.gen(function*() {
    let stalls = 0
    const { watcher } = yield* watchOne(conn, writeDeadline(Effect.sync(() => ++stalls)))
    return { watcher, stalls: () => stalls }
  })

describe("heartbeat", () => {
  it.effect("closes an unresponsive peer 1011 heartbeat timeout after interval + timeout, not before", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: false })
      const { watcher } = yield* watchOne(conn, HEARTBEAT)

      yield* TestClock.adjust("29999 millis")
      assert.strictEqual(conn.pings(), 0)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(conn.pings(), 1)
      yield* TestClock.adjust("29999 millis")
      assert.strictEqual(conn.closeCalls.length, 0)
      assert.strictEqual(watcher.size(), 1)

      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(conn.closeCalls, [CloseCodes.HeartbeatTimeout])
      assert.strictEqual(conn.closedWith()?.reason, "heartbeat timeout")
      assert.strictEqual(watcher.size(), 0)
    }))

  it.effect("a heartbeat timeout is logged with the connection's fields, by the loggers of the watching session", () =>
    Effect.gen(function*() {
      const lines: Array<{ readonly message: unknown; readonly level: string; readonly fields: unknown }> = []
      const capture = Logger.make(({ fiber, logLevel, message }) => {
        lines.push({
          message: Array.isArray(message) ? message[0] : message,
          level: logLevel,
          fields: fiber.getRef(References.CurrentLogAnnotations)
        })
      })
      const conn = yield* makeFakeConnection({ answersPings: false })
      const watcher = yield* makeConnectionWatcher
      yield* watchIn(watcher, conn, { ...HEARTBEAT, fields: { server_id: "s", conn_id: "client-s-00000000" } }).pipe(
        Effect.provideService(Logger.CurrentLoggers, new Set([capture]))
      )
      yield* TestClock.adjust("60 seconds")
      assert.deepStrictEqual(conn.closeCalls, [CloseCodes.HeartbeatTimeout])
      assert.deepStrictEqual(lines, [{
        message: "heartbeat timeout",
        level: "Info",
        fields: { server_id: "s", conn_id: "client-s-00000000" }
      }])
    }))

  it.effect("a responsive peer survives many cycles", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: true })
      const { watcher } = yield* watchOne(conn, HEARTBEAT)
      for (let i = 0; i < 20; i++) yield* TestClock.adjust("30 seconds")
      assert.strictEqual(conn.pings(), 20)
      assert.strictEqual(conn.closeCalls.length, 0)
      assert.strictEqual(watcher.size(), 1)
    }))

  it.effect("a peer that stops answering is closed one interval + timeout after its last pong", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: true })
      yield* watchOne(conn, HEARTBEAT)
      yield* TestClock.adjust("90 seconds") // pongs at 30, 60, 90
      conn.answersPings = false
      yield* TestClock.adjust("59999 millis")
      assert.strictEqual(conn.closeCalls.length, 0)
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(conn.closeCalls, [CloseCodes.HeartbeatTimeout])
    }))

  it.effect("a cancelled heartbeat (the session's scope closed) never closes", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: false })
      const { watcher, stop } = yield* watchOne(conn, HEARTBEAT)
      yield* TestClock.adjust("45 seconds") // a ping is outstanding
      assert.strictEqual(conn.pings(), 1)
      yield* stop
      assert.strictEqual(watcher.size(), 0)
      yield* TestClock.adjust("10 minutes")
      assert.strictEqual(conn.closeCalls.length, 0)
      assert.strictEqual(conn.pings(), 1)
    }))

  it.effect("a socket that is gone ends the heartbeat without a close", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: false })
      const { watcher } = yield* watchOne(conn, HEARTBEAT)
      yield* TestClock.adjust("40 seconds")
      conn.peerClose(1006)
      yield* TestClock.adjust("19999 millis")
      assert.strictEqual(watcher.size(), 1)
      yield* TestClock.adjust("1 millis") // noticed at the next check, the pong deadline
      assert.strictEqual(watcher.size(), 0)
      assert.strictEqual(conn.closeCalls.length, 0)
    }))
})

describe("write deadline", () => {
  it.effect("stalled pending bytes trigger onStall after the write timeout, not before", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ writes: "stall" })
      assert.isTrue(conn.send(["x".repeat(100)]))
      const { stalls, watcher } = yield* writeWatch(conn)

      yield* TestClock.adjust("9999 millis")
      assert.strictEqual(stalls(), 0)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(stalls(), 1)
      assert.strictEqual(watcher.size(), 0)
    }))

  it.effect("the deadline runs from the send that made bytes pending", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ writes: "stall" })
      const { stalls } = yield* writeWatch(conn)
      yield* TestClock.adjust("3 seconds")
      conn.send(["x"])
      yield* TestClock.adjust("9999 millis") // t = 12.999 s
      assert.strictEqual(stalls(), 0)
      yield* TestClock.adjust("1 millis") // t = 13 s
      assert.strictEqual(stalls(), 1)
    }))

  it.effect("flush progress resets the deadline", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ writes: "stall" })
      conn.send(["x".repeat(100)])
      const { stalls } = yield* writeWatch(conn)
      yield* TestClock.adjust("8 seconds")
      conn.flush(10) // partial progress at t = 8 s
      yield* TestClock.adjust("9999 millis") // t = 17.999 s
      assert.strictEqual(stalls(), 0)
      yield* TestClock.adjust("1 millis") // t = 18 s
      assert.strictEqual(stalls(), 1)
    }))

  it.effect("a connection that flushes never stalls", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ writes: "stall" })
      const { stalls, watcher } = yield* writeWatch(conn)
      for (let i = 0; i < 30; i++) {
        conn.send(["x"])
        yield* TestClock.adjust("9 seconds")
        conn.flush()
      }
      yield* TestClock.adjust("10 minutes")
      assert.strictEqual(stalls(), 0)
      assert.strictEqual(watcher.size(), 1)
    }))
})

describe("message deadline", () => {
  const MESSAGE: WatchOptions<void> = { ...OFF, writeTimeout: WRITE_TIMEOUT, messageTimeout: Duration.seconds(30) }

  it.effect("a started message not completed in 30 s closes 1008, not before", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection()
      const { watcher } = yield* watchOne(conn, MESSAGE)
      yield* TestClock.adjust("7 seconds")
      conn.beginMessage() // t = 7 s
      yield* TestClock.adjust("29999 millis")
      assert.strictEqual(conn.closeCalls.length, 0)
      yield* TestClock.adjust("1 millis") // t = 37 s
      assert.deepStrictEqual(conn.closeCalls, [MessageTimeout])
      assert.strictEqual(watcher.size(), 0)
    }))

  it.effect("a message that starts while no other deadline is near is still timed from its start", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection()
      yield* watchOne(conn, { ...OFF, messageTimeout: Duration.seconds(30) })
      yield* TestClock.adjust("50 seconds")
      conn.beginMessage() // t = 50 s
      yield* TestClock.adjust("29999 millis")
      assert.strictEqual(conn.closeCalls.length, 0)
      yield* TestClock.adjust("1 millis") // t = 80 s
      assert.deepStrictEqual(conn.closeCalls, [MessageTimeout])
    }))

  it.effect("idle time between messages is unbounded; a completed message clears the deadline", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection()
      const { watcher } = yield* watchOne(conn, MESSAGE)
      yield* TestClock.adjust("10 minutes")
      conn.beginMessage()
      yield* TestClock.adjust("29 seconds")
      conn.endMessage()
      yield* TestClock.adjust("10 minutes")
      assert.strictEqual(conn.closeCalls.length, 0)
      assert.strictEqual(watcher.size(), 1)
    }))
})

describe("one watch for all three", () => {
  it.effect("a peer that answers every ping but never reads is still ended by the write deadline", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ writes: "stall", answersPings: true })
      let stalls = 0
      const { watcher } = yield* watchOne(conn, {
        heartbeatInterval: Duration.seconds(3),
        heartbeatTimeout: Duration.seconds(3),
        writeTimeout: WRITE_TIMEOUT,
        messageTimeout: Duration.seconds(30),
        onWriteStall: () => Effect.sync(() => ++stalls)
      })
      yield* TestClock.adjust("5 seconds")
      conn.send(["x"]) // t = 5 s, never flushed
      yield* TestClock.adjust("9999 millis")
      assert.strictEqual(stalls, 0)
      assert.isAtLeast(conn.pings(), 4) // the heartbeat kept running meanwhile
      yield* TestClock.adjust("1 millis") // t = 15 s
      assert.strictEqual(stalls, 1)
      assert.strictEqual(watcher.size(), 0)
      assert.strictEqual(conn.closeCalls.length, 0)
    }))
})

describe("one watcher for many connections", () => {
  it.effect("two connections with different deadlines each act at their own time", () =>
    Effect.gen(function*() {
      const watcher = yield* makeConnectionWatcher
      const quick = yield* makeFakeConnection({ answersPings: false })
      const slow = yield* makeFakeConnection({ answersPings: false })
      yield* watchIn(watcher, quick, heartbeatOf(10))
      yield* watchIn(watcher, slow, HEARTBEAT)
      assert.strictEqual(watcher.size(), 2)

      yield* TestClock.adjust("19999 millis")
      assert.strictEqual(quick.closeCalls.length, 0)
      yield* TestClock.adjust("1 millis") // t = 20 s
      assert.deepStrictEqual(quick.closeCalls, [CloseCodes.HeartbeatTimeout])
      assert.strictEqual(slow.pings(), 0)
      assert.strictEqual(watcher.size(), 1)

      yield* TestClock.adjust("39999 millis") // t = 59.999 s
      assert.strictEqual(slow.pings(), 1)
      assert.strictEqual(slow.closeCalls.length, 0)
      yield* TestClock.adjust("1 millis") // t = 60 s
      assert.deepStrictEqual(slow.closeCalls, [CloseCodes.HeartbeatTimeout])
      assert.strictEqual(watcher.size(), 0)
    }))

  it.effect("an entry removed before its deadline (its scope closed) never acts; the others still do", () =>
    Effect.gen(function*() {
      const watcher = yield* makeConnectionWatcher
      const removed = yield* makeFakeConnection({ writes: "stall" })
      const kept = yield* makeFakeConnection({ writes: "stall" })
      removed.send(["x"])
      kept.send(["x"])
      const stalled: Array<string> = []
      const stallOf = (name: string) => writeDeadline(Effect.sync(() => stalled.push(name)))
      const { stop } = yield* watchIn(watcher, removed, stallOf("removed"))
      yield* watchIn(watcher, kept, stallOf("kept"))
      yield* TestClock.adjust("9999 millis")
      yield* stop
      assert.strictEqual(watcher.size(), 1)
      yield* TestClock.adjust("10 minutes")
      assert.deepStrictEqual(stalled, ["kept"])
      assert.strictEqual(watcher.size(), 0)
    }))

  it.effect("removing one entry leaves every other entry's deadlines intact", () =>
    Effect.gen(function*() {
      const watcher = yield* makeConnectionWatcher
      const removed = yield* makeFakeConnection({ answersPings: false })
      const { stop } = yield* watchIn(watcher, removed, HEARTBEAT) // next look at 30 s
      const other = yield* makeFakeConnection({ answersPings: false })
      yield* watchIn(watcher, other, HEARTBEAT)
      const stalled = yield* makeFakeConnection({ writes: "stall" })
      stalled.send(["x"])
      let stalls = 0
      yield* watchIn(watcher, stalled, writeDeadline(Effect.sync(() => ++stalls)))
      yield* TestClock.adjust("1 second")
      yield* stop
      yield* TestClock.adjust("8999 millis")
      assert.strictEqual(stalls, 0)
      yield* TestClock.adjust("1 millis") // t = 10 s
      assert.strictEqual(stalls, 1)
      yield* TestClock.adjust("50 seconds") // t = 60 s
      assert.deepStrictEqual(other.closeCalls, [CloseCodes.HeartbeatTimeout])
      assert.strictEqual(removed.closeCalls.length, 0)
    }))

  it.effect("thousands of idle connections are each looked at only when something can be due", () =>
    Effect.gen(function*() {
      const watcher = yield* makeConnectionWatcher
      const looks: Array<number> = []
      for (let i = 0; i < 3000; i++) {
        const conn = yield* makeFakeConnection({ answersPings: true })
        looks.push(0)
        const counted = {
          ...conn,
          isOpen: () => {
            looks[i]!++
            return conn.isOpen()
          }
        }
        yield* watchIn(watcher, counted, { ...HEARTBEAT, writeTimeout: WRITE_TIMEOUT })
      }
      yield* TestClock.adjust("60 seconds") // 600 ticks
      assert.strictEqual(watcher.size(), 3000)
      // Looked at on the first tick, then at most every 10 s (the write limit bounds the wait).
      assert.isAtMost(Math.max(...looks), 10)
      assert.isAtLeast(Math.min(...looks), 6)
    }))

  it.effect("a connection registered later with an earlier deadline is served on time", () =>
    Effect.gen(function*() {
      const watcher = yield* makeConnectionWatcher
      const early = yield* makeFakeConnection({ answersPings: false })
      yield* watchIn(watcher, early, HEARTBEAT) // closes at 60 s
      yield* TestClock.adjust("5 seconds")
      const late = yield* makeFakeConnection({ writes: "stall" })
      late.send(["x"]) // t = 5 s
      let stalls = 0
      yield* watchIn(watcher, late, writeDeadline(Effect.sync(() => ++stalls)))
      yield* TestClock.adjust("9999 millis")
      assert.strictEqual(stalls, 0)
      yield* TestClock.adjust("1 millis") // t = 15 s
      assert.strictEqual(stalls, 1)
      assert.strictEqual(early.closeCalls.length, 0)
      yield* TestClock.adjust("45 seconds") // t = 60 s
      assert.deepStrictEqual(early.closeCalls, [CloseCodes.HeartbeatTimeout])
    }))

  it.effect("a deadline off the tick grid is acted on at the next tick: never early, at most one tick late", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ writes: "stall" })
      const { stalls } = yield* writeWatch(conn)
      yield* TestClock.adjust("5050 millis")
      conn.send(["x"]) // deadline at 15.05 s
      yield* TestClock.adjust("10049 millis") // t = 15.099 s
      assert.strictEqual(stalls(), 0)
      yield* TestClock.adjust("1 millis") // t = 15.1 s, the next tick
      assert.strictEqual(stalls(), 1)
    }))

  it.effect("ticks are on the clock's 100 ms grid, whenever the watcher woke: deadlines on it are exact", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ writes: "stall" })
      yield* TestClock.adjust("50 millis")
      const { stalls } = yield* writeWatch(conn) // the watcher wakes at t = 50 ms
      yield* TestClock.adjust("950 millis")
      conn.send(["x"]) // t = 1 s: deadline at 11 s
      yield* TestClock.adjust("9999 millis")
      assert.strictEqual(stalls(), 0)
      yield* TestClock.adjust("1 millis") // t = 11 s
      assert.strictEqual(stalls(), 1)
    }))

  it.effect("a connection watched after the watcher went idle is served", () =>
    Effect.gen(function*() {
      const watcher = yield* makeConnectionWatcher
      const first = yield* makeFakeConnection({ answersPings: false })
      yield* watchIn(watcher, first, HEARTBEAT)
      yield* TestClock.adjust("60 seconds")
      assert.strictEqual(watcher.size(), 0) // nothing watched: the watcher waits without a timer
      yield* TestClock.adjust("1 hour")
      const second = yield* makeFakeConnection({ answersPings: false })
      yield* watchIn(watcher, second, HEARTBEAT)
      yield* TestClock.adjust("59999 millis")
      assert.strictEqual(second.closeCalls.length, 0)
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(second.closeCalls, [CloseCodes.HeartbeatTimeout])
    }))

  it.effect("an onWriteStall that throws, fails, dies or hangs, or a close that dies, does not stop the watcher for others", () =>
    Effect.gen(function*() {
      const watcher = yield* makeConnectionWatcher
      const stalling = (onWriteStall: Effect.Effect<unknown>) =>
        Effect.gen(function*() {
          const conn = yield* makeFakeConnection({ writes: "stall" })
          conn.send(["x"])
          yield* watchIn(watcher, conn, writeDeadline(onWriteStall))
        })
      const throwing = yield* makeFakeConnection({ writes: "stall" })
      throwing.send(["x"])
      yield* watchIn(watcher, throwing, {
        ...writeDeadline(Effect.void),
        onWriteStall: () => {
          throw new Error("onWriteStall builder defect")
        }
      })
      yield* stalling(Effect.die("onWriteStall defect"))
      yield* stalling(Effect.never)
      yield* stalling(Effect.fail("onWriteStall failure") as unknown as Effect.Effect<void>)
      const dyingClose = yield* makeFakeConnection({ answersPings: false })
      yield* watchIn(watcher, { ...dyingClose, close: () => Effect.die("close defect") }, HEARTBEAT)
      let stalls = 0
      yield* stalling(Effect.sync(() => ++stalls)) // due at the same tick as the failing ones
      const healthy = yield* makeFakeConnection({ answersPings: false })
      yield* watchIn(watcher, healthy, heartbeatOf(40))

      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(stalls, 1)
      yield* TestClock.adjust("50 seconds") // t = 60 s: the dying close runs
      assert.strictEqual(watcher.size(), 1)
      yield* TestClock.adjust("19999 millis")
      assert.strictEqual(healthy.closeCalls.length, 0)
      yield* TestClock.adjust("1 millis") // t = 80 s
      assert.deepStrictEqual(healthy.closeCalls, [CloseCodes.HeartbeatTimeout])
      assert.strictEqual(watcher.size(), 0)
    }))

  it.effect("a connection whose adapter throws loses its own watch only", () =>
    Effect.gen(function*() {
      const watcher = yield* makeConnectionWatcher
      const broken = yield* makeFakeConnection()
      yield* watchIn(watcher, {
        ...broken,
        pendingBytes: () => {
          throw new Error("adapter defect")
        }
      }, HEARTBEAT)
      const healthy = yield* makeFakeConnection({ answersPings: false })
      yield* watchIn(watcher, healthy, HEARTBEAT)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(watcher.size(), 1)
      yield* TestClock.adjust("59 seconds")
      assert.deepStrictEqual(healthy.closeCalls, [CloseCodes.HeartbeatTimeout])
    }))
})

describe("conflict probe", () => {
  it.effect("an incumbent that answers the ping is alive", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: true })
      assert.isTrue(yield* probe(conn, PROBE_TIMEOUT))
      assert.strictEqual(conn.pings(), 1)
    }))

  it.effect("no pong: dead after the probe timeout, not before", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: false })
      const fiber = yield* Effect.forkChild(probe(conn, PROBE_TIMEOUT))
      yield* TestClock.adjust("9999 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      assert.isFalse(yield* Fiber.join(fiber))
      assert.strictEqual(conn.closeCalls.length, 0)
    }))

  it.effect("a ping that fails (socket gone) is dead at once", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: true })
      conn.peerClose(1006)
      assert.isFalse(yield* probe(conn, PROBE_TIMEOUT))
    }))

  it.effect("an incumbent whose socket drops during the probe is dead before the timeout", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: false })
      const fiber = yield* Effect.forkChild(probe(conn, PROBE_TIMEOUT))
      yield* TestClock.adjust("2 seconds")
      conn.peerClose(1006)
      yield* settle
      assert.isDefined(fiber.pollUnsafe()) // decided without waiting for the timeout
      assert.isFalse(yield* Fiber.join(fiber))
    }))
})
