/**
 * Heartbeat, write watchdog and conflict probe (SPEC §3.3, §4.3, §6), all on TestClock.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as References from "effect/References"
import { TestClock } from "effect/testing"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import { probe } from "../../src/liveness/ConflictProbe.ts"
import { MessageTimeout, watchConnection, type WatchOptions } from "../../src/liveness/ConnectionWatch.ts"
import { settle } from "../support/Core.ts"
import { makeFakeConnection } from "../support/FakeConnection.ts"

const WRITE_TIMEOUT = Duration.seconds(10)
const FOREVER = Duration.hours(24)

/** The connection watch with SPEC defaults for the heartbeat and the other two deadlines off. */
const heartbeat = (conn: Parameters<typeof watchConnection>[0], options: Partial<WatchOptions<void>> = {}) =>
  watchConnection(conn, {
    heartbeatInterval: Duration.seconds(30),
    heartbeatTimeout: Duration.seconds(30),
    writeTimeout: FOREVER,
    messageTimeout: FOREVER,
    onWriteStall: Effect.void,
    ...options
  })
const PROBE_TIMEOUT = Duration.seconds(10)

describe("heartbeat", () => {
  it.effect("closes an unresponsive peer 1011 heartbeat timeout after interval + timeout, not before", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: false })
      const fiber = yield* Effect.forkChild(heartbeat(conn))

      yield* TestClock.adjust("29999 millis")
      assert.strictEqual(conn.pings(), 0)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(conn.pings(), 1)
      yield* TestClock.adjust("29999 millis")
      assert.strictEqual(conn.closeCalls.length, 0)
      assert.isUndefined(fiber.pollUnsafe())

      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(conn.closeCalls, [CloseCodes.HeartbeatTimeout])
      assert.strictEqual(conn.closedWith()?.reason, "heartbeat timeout")
      assert.strictEqual(yield* Fiber.join(fiber), "heartbeat timeout")
    }))

  it.effect("a heartbeat timeout is logged with the connection's fields", () =>
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
      const fiber = yield* Effect.forkChild(
        heartbeat(conn, { fields: { server_id: "s", conn_id: "client-s-00000000" } }).pipe(
          Effect.provideService(Logger.CurrentLoggers, new Set([capture]))
        )
      )
      yield* TestClock.adjust("60 seconds")
      assert.strictEqual(yield* Fiber.join(fiber), "heartbeat timeout")
      assert.deepStrictEqual(lines, [{
        message: "heartbeat timeout",
        level: "Info",
        fields: { server_id: "s", conn_id: "client-s-00000000" }
      }])
    }))

  it.effect("a responsive peer survives many cycles", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: true })
      const fiber = yield* Effect.forkChild(heartbeat(conn))
      for (let i = 0; i < 20; i++) yield* TestClock.adjust("30 seconds")
      assert.strictEqual(conn.pings(), 20)
      assert.strictEqual(conn.closeCalls.length, 0)
      assert.isUndefined(fiber.pollUnsafe())
      yield* Fiber.interrupt(fiber)
    }))

  it.effect("a peer that stops answering is closed one interval + timeout after its last pong", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: true })
      yield* Effect.forkChild(heartbeat(conn))
      yield* TestClock.adjust("90 seconds") // pongs at 30, 60, 90
      conn.answersPings = false
      yield* TestClock.adjust("59999 millis")
      assert.strictEqual(conn.closeCalls.length, 0)
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(conn.closeCalls, [CloseCodes.HeartbeatTimeout])
    }))

  it.effect("a cancelled heartbeat never closes", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: false })
      const fiber = yield* Effect.forkChild(heartbeat(conn))
      yield* TestClock.adjust("45 seconds") // a ping is outstanding
      assert.strictEqual(conn.pings(), 1)
      yield* Fiber.interrupt(fiber)
      yield* TestClock.adjust("10 minutes")
      assert.strictEqual(conn.closeCalls.length, 0)
      assert.strictEqual(conn.pings(), 1)
    }))

  it.effect("a socket that is gone ends the heartbeat without a close", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ answersPings: false })
      const fiber = yield* Effect.forkChild(heartbeat(conn))
      yield* TestClock.adjust("40 seconds")
      conn.peerClose(1006)
      yield* TestClock.adjust("20 seconds") // noticed at the next check, the pong deadline
      assert.strictEqual(yield* Fiber.join(fiber), "closed")
      assert.strictEqual(conn.closeCalls.length, 0)
    }))
})

describe("write deadline", () => {
  const watch = (conn: Parameters<typeof watchConnection>[0]) =>
    Effect.gen(function*() {
      let stalls = 0
      const fiber = yield* Effect.forkChild(watchConnection(conn, {
        heartbeatInterval: FOREVER,
        heartbeatTimeout: FOREVER,
        writeTimeout: WRITE_TIMEOUT,
        messageTimeout: FOREVER,
        onWriteStall: Effect.sync(() => ++stalls)
      }))
      yield* settle
      return { fiber, stalls: () => stalls }
    })

  it.effect("stalled pending bytes trigger onStall after the write timeout, not before", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ writes: "stall" })
      assert.isTrue(conn.send(["x".repeat(100)]))
      const { fiber, stalls } = yield* watch(conn)

      yield* TestClock.adjust("9999 millis")
      assert.strictEqual(stalls(), 0)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(stalls(), 1)
      assert.strictEqual(yield* Fiber.join(fiber), "write stalled")
    }))

  it.effect("the deadline runs from the send that made bytes pending", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ writes: "stall" })
      const { stalls } = yield* watch(conn)
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
      const { stalls } = yield* watch(conn)
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
      const { fiber, stalls } = yield* watch(conn)
      for (let i = 0; i < 30; i++) {
        conn.send(["x"])
        yield* TestClock.adjust("9 seconds")
        conn.flush()
      }
      yield* TestClock.adjust("10 minutes")
      assert.strictEqual(stalls(), 0)
      assert.isUndefined(fiber.pollUnsafe())
      yield* Fiber.interrupt(fiber)
    }))
})

describe("message deadline", () => {
  const watch = (conn: Parameters<typeof watchConnection>[0]) =>
    Effect.forkChild(watchConnection(conn, {
      heartbeatInterval: FOREVER,
      heartbeatTimeout: FOREVER,
      writeTimeout: WRITE_TIMEOUT,
      messageTimeout: Duration.seconds(30),
      onWriteStall: Effect.void
    }))

  it.effect("a started message not completed in 30 s closes 1008, not before", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection()
      yield* watch(conn)
      yield* TestClock.adjust("7 seconds")
      conn.beginMessage() // t = 7 s
      yield* TestClock.adjust("29999 millis")
      assert.strictEqual(conn.closeCalls.length, 0)
      yield* TestClock.adjust("1 millis") // t = 37 s
      assert.deepStrictEqual(conn.closeCalls, [MessageTimeout])
    }))

  it.effect("idle time between messages is unbounded; a completed message clears the deadline", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection()
      const fiber = yield* watch(conn)
      yield* TestClock.adjust("10 minutes")
      conn.beginMessage()
      yield* TestClock.adjust("29 seconds")
      conn.endMessage()
      yield* TestClock.adjust("10 minutes")
      assert.strictEqual(conn.closeCalls.length, 0)
      assert.isUndefined(fiber.pollUnsafe())
      yield* Fiber.interrupt(fiber)
    }))
})

describe("one watch for all three", () => {
  it.effect("a peer that answers every ping but never reads is still ended by the write deadline", () =>
    Effect.gen(function*() {
      const conn = yield* makeFakeConnection({ writes: "stall", answersPings: true })
      let stalls = 0
      const fiber = yield* Effect.forkChild(watchConnection(conn, {
        heartbeatInterval: Duration.seconds(3),
        heartbeatTimeout: Duration.seconds(3),
        writeTimeout: WRITE_TIMEOUT,
        messageTimeout: Duration.seconds(30),
        onWriteStall: Effect.sync(() => ++stalls)
      }))
      yield* TestClock.adjust("5 seconds")
      conn.send(["x"]) // t = 5 s, never flushed
      yield* TestClock.adjust("9999 millis")
      assert.strictEqual(stalls, 0)
      assert.isAtLeast(conn.pings(), 4) // the heartbeat kept running meanwhile
      yield* TestClock.adjust("1 millis") // t = 15 s
      assert.strictEqual(stalls, 1)
      assert.strictEqual(yield* Fiber.join(fiber), "write stalled")
      assert.strictEqual(conn.closeCalls.length, 0)
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
