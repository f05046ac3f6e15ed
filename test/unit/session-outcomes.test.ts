/**
 * What a session decides, over in-memory connections with the relay's core services (SPEC §2.4,
 * §3.3, §4.1): who hears a phone's close notice after the slot changed hands, which close code
 * and drop reason each phone-forwarder failure ends in, and what each answer of the conflict
 * probe does to the newcomer. `TestClock` drives the probe and the grace.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { TestClock } from "effect/testing"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import { Registry } from "../../src/registry/Registry.ts"
import { Lifecycle } from "../../src/lifecycle/Lifecycle.ts"
import { count, settle } from "../support/Core.ts"
import { type FakeConnection, makeFakeConnection } from "../support/FakeConnection.ts"
import { binarySession, closeNotice, envelope, lastConnId, type Line, phoneSession, withCore } from "../support/Sessions.ts"

/** A binary session holding "s"; `options` shape its connection. */
const holder = (options: Parameters<typeof makeFakeConnection>[0] = {}) =>
  Effect.gen(function*() {
    const conn = yield* makeFakeConnection(options)
    const fiber = yield* binarySession(conn)
    yield* settle
    return { conn, fiber }
  })

/** A phone session on "s"; returns its connection and the conn_id it was issued. */
const phone = (lines: ReadonlyArray<Line>, options: Parameters<typeof makeFakeConnection>[0] = {}) =>
  Effect.gen(function*() {
    const conn = yield* makeFakeConnection(options)
    const fiber = yield* phoneSession(conn)
    yield* settle
    return { conn, fiber, connId: lastConnId(lines) }
  })

/** Every message the binary got that mentions `connId` (envelopes and close notices). */
const about = (binary: FakeConnection, connId: string) => binary.sent.filter((m) => m.includes(connId))

describe("close notice identity (SPEC §2.4): only the binary connection that served the phone, while it holds the slot", () => {
  it.effect("after a reclaim, the evicted phone's notice reaches neither the new binary nor the old one", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const old = yield* holder()
        const p = yield* phone(lines)
        p.conn.push("1")
        yield* settle
        old.conn.peerClose(1006)
        yield* settle
        const reclaimer = yield* holder()

        assert.deepStrictEqual(p.conn.closedWith(), CloseCodes.Reclaimed)
        assert.isDefined(p.fiber.pollUnsafe())
        assert.strictEqual(yield* count(Metrics.graceReclaims), 1)
        assert.deepStrictEqual(about(reclaimer.conn, p.connId), [])
        assert.deepStrictEqual(about(old.conn, p.connId), [envelope(p.connId, "1")])

        // The new binary does hear of a phone it served.
        const next = yield* phone(lines)
        next.conn.peerClose(4000)
        yield* settle
        assert.deepStrictEqual(about(reclaimer.conn, next.connId), [closeNotice(next.connId, 4000)])
      })
    ))

  it.effect("after a takeover, the evicted phone's notice reaches neither the newcomer nor the displaced incumbent", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const incumbent = yield* holder({ answersPings: false })
        const p = yield* phone(lines)
        const newcomer = yield* holder()

        yield* TestClock.adjust("10 seconds") // the probe times out: takeover
        yield* settle

        assert.strictEqual(yield* count(Metrics.takeovers), 1)
        assert.deepStrictEqual(p.conn.closedWith(), CloseCodes.Reclaimed)
        assert.deepStrictEqual(incumbent.conn.closedWith(), CloseCodes.HeartbeatTimeout)
        assert.isDefined(p.fiber.pollUnsafe())
        assert.deepStrictEqual(about(newcomer.conn, p.connId), [])
        assert.deepStrictEqual(about(incumbent.conn, p.connId), [])
      })
    ))

  it.effect("a phone that leaves while its binary is in grace is heard by nobody, not even the binary that reclaims later", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const old = yield* holder()
        const p = yield* phone(lines)
        old.conn.peerClose(1006)
        yield* settle
        p.conn.peerClose(1000)
        yield* settle
        assert.isDefined(p.fiber.pollUnsafe())
        assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 0 })
        const reclaimer = yield* holder()
        assert.deepStrictEqual(about(reclaimer.conn, p.connId), [])
        assert.deepStrictEqual(about(old.conn, p.connId), [])
      })
    ))

  it.effect("a phone closed by its binary's directive sends no notice; one that leaves on its own does", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const binary = yield* holder()
        const directed = yield* phone(lines)
        const leaving = yield* phone(lines)
        binary.conn.push(`{"conn_id":"${directed.connId}","close_code":4001}`)
        leaving.conn.peerClose(1006) // dropped: the notice says 1001 (SPEC §2.4)
        yield* settle
        assert.deepStrictEqual(directed.conn.closedWith(), { code: 4001, reason: "" })
        assert.deepStrictEqual(about(binary.conn, directed.connId), [])
        assert.deepStrictEqual(about(binary.conn, leaving.connId), [closeNotice(leaving.connId, 1001)])
      })
    ))
})

describe("a phone-forwarder failure ends the phone with its close code and counts its frames under its reason", () => {
  const reasons = ["invalid_json", "no_binary", "binary_write_failed"] as const
  const cases = [
    {
      failure: "InvalidJson",
      close: CloseCodes.Normal,
      reason: "invalid_json",
      // The relay closed the phone: the binary hears 1001.
      notice: true,
      arrange: (_binary: FakeConnection, p: FakeConnection) => Effect.sync(() => p.push("1", "not json", "3"))
    },
    {
      failure: "NoBinary",
      close: CloseCodes.Normal,
      reason: "no_binary",
      notice: false,
      arrange: (binary: FakeConnection, p: FakeConnection) =>
        Effect.andThen(Effect.sync(() => binary.peerClose(1006)), Effect.andThen(settle, Effect.sync(() => p.push("1", "2", "3"))))
    },
    {
      failure: "BinaryWriteFailed",
      close: CloseCodes.BinaryBacklogFull,
      reason: "binary_write_failed",
      // The binary takes no writes, not even the notice.
      notice: false,
      arrange: (binary: FakeConnection, p: FakeConnection) =>
        Effect.sync(() => {
          binary.writes = "fail"
          p.push("1", "2", "3")
        })
    }
  ] as const

  for (const { arrange, close, failure, notice, reason } of cases) {
    it.effect(`${failure}: closed ${close.code} ${JSON.stringify(close.reason)}, 3 frames dropped as ${reason}, the binary untouched`, () =>
      withCore((lines) =>
        Effect.gen(function*() {
          const registry = yield* Registry
          const binary = yield* holder()
          const p = yield* phone(lines)
          yield* arrange(binary.conn, p.conn)
          yield* settle

          assert.deepStrictEqual(p.conn.closeCalls, [close])
          assert.isDefined(p.fiber.pollUnsafe())
          assert.isUndefined(registry.phoneFor("s", p.connId))
          // "InvalidJson": the valid "1" was forwarded; its batch's invalid rest is what dropped.
          const dropped = failure === "InvalidJson" ? 2 : 3
          for (const other of reasons) {
            assert.strictEqual(yield* count(Metrics.framesDropped[other]), other === reason ? dropped : 0, other)
          }
          assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 3 - dropped)
          assert.deepStrictEqual(
            binary.conn.sent.filter((m) => m.includes("close_code")),
            notice ? [closeNotice(p.connId, 1001)] : []
          )
          assert.strictEqual(binary.conn.closeCalls.length, 0)
        })
      ))
  }
})

describe("conflict probe: each answer decides the newcomer (SPEC §3.3)", () => {
  it.effect("pong: the newcomer is closed 4409 and counted reject_409 + server_in_use; the incumbent and its phones are untouched", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const incumbent = yield* holder()
        const p = yield* phone(lines)
        const newcomer = yield* holder()

        assert.deepStrictEqual(newcomer.conn.closeCalls, [CloseCodes.AlreadyClaimed])
        assert.isDefined(newcomer.fiber.pollUnsafe())
        assert.strictEqual(incumbent.conn.pings(), 1)
        assert.strictEqual(registry.binaryFor("s")?.conn, incumbent.conn)
        assert.strictEqual(incumbent.conn.closeCalls.length, 0)
        assert.strictEqual(p.conn.closeCalls.length, 0)
        assert.strictEqual(yield* count(Metrics.upgradeAttempts.server.reject_409), 1)
        assert.strictEqual(yield* count(Metrics.registerFailures.server_in_use), 1)
        assert.strictEqual(yield* count(Metrics.upgradeAttempts.server.accept), 1)
        assert.strictEqual(yield* count(Metrics.takeovers), 0)
      })
    ))

  it.effect("no pong within the probe timeout: takeover, exactly at 10 s", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const incumbent = yield* holder({ answersPings: false })
        const p = yield* phone(lines)
        const newcomer = yield* holder()

        yield* TestClock.adjust("9999 millis")
        assert.strictEqual(registry.binaryFor("s")?.conn, incumbent.conn)
        yield* TestClock.adjust("1 millis")
        yield* settle
        assert.strictEqual(registry.binaryFor("s")?.conn, newcomer.conn)
        assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Reclaimed])
        assert.deepStrictEqual(incumbent.conn.closeCalls, [CloseCodes.HeartbeatTimeout])
        assert.strictEqual(newcomer.conn.closeCalls.length, 0)
        assert.strictEqual(yield* count(Metrics.takeovers), 1)
        assert.strictEqual(yield* count(Metrics.upgradeAttempts.server.accept), 2)
        assert.strictEqual(yield* count(Metrics.upgradeAttempts.server.reject_409), 0)
      })
    ))

  it.effect("the ping fails (the incumbent's socket drops during the probe): takeover at once, not at the timeout", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const incumbent = yield* holder({ answersPings: false })
        const p = yield* phone(lines)
        const newcomer = yield* holder()

        yield* TestClock.adjust("2 seconds")
        incumbent.conn.peerClose(1006)
        yield* settle
        assert.strictEqual(registry.binaryFor("s")?.conn, newcomer.conn)
        assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 0 })
        assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Reclaimed])
        assert.strictEqual(newcomer.conn.closeCalls.length, 0)
        assert.strictEqual(yield* count(Metrics.takeovers), 1)
        assert.strictEqual(yield* count(Metrics.graceReclaims), 0)
        // The incumbent's own release armed nothing that outlives the takeover.
        yield* TestClock.adjust("40 seconds")
        assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
        assert.strictEqual(registry.binaryFor("s")?.conn, newcomer.conn)
      })
    ))

  it.effect("the relay starts draining during the probe: the newcomer is closed 1000 and nothing is counted", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const lifecycle = yield* Lifecycle
        const incumbent = yield* holder({ answersPings: false })
        const p = yield* phone(lines)
        const newcomer = yield* holder()

        yield* TestClock.adjust("3 seconds")
        assert.isTrue(yield* lifecycle.startDraining)
        yield* settle

        assert.deepStrictEqual(newcomer.conn.closeCalls, [CloseCodes.Normal])
        assert.isDefined(newcomer.fiber.pollUnsafe())
        assert.strictEqual(registry.binaryFor("s")?.conn, incumbent.conn)
        assert.strictEqual(incumbent.conn.closeCalls.length, 0)
        assert.strictEqual(p.conn.closeCalls.length, 0)
        assert.strictEqual(yield* count(Metrics.upgradeAttempts.server.accept), 1)
        assert.strictEqual(yield* count(Metrics.upgradeAttempts.server.reject_409), 0)
        assert.strictEqual(yield* count(Metrics.registerFailures.server_in_use), 0)
        assert.strictEqual(yield* count(Metrics.takeovers), 0)
        // The probe is over: its timeout passing later changes nothing.
        yield* TestClock.adjust("10 seconds")
        assert.strictEqual(registry.binaryFor("s")?.conn, incumbent.conn)
        assert.strictEqual(yield* count(Metrics.takeovers), 0)
        yield* Fiber.interrupt(incumbent.fiber)
      })
    ))
})
