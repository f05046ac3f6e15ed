/**
 * Whole sessions over in-memory connections, with the relay's core services (SPEC §3.3, §3.4,
 * §2.4, §11): a session that dies with a defect never leaves its connection open, and a newcomer
 * binary that leaves during the conflict probe never takes the slot. TestClock drives the probe,
 * the grace and the heartbeat.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { TestClock } from "effect/testing"
import * as Metrics from "../../src/observability/Metrics.ts"
import { Registry } from "../../src/registry/Registry.ts"
import { count, settle } from "../support/Core.ts"
import { type FakeConnection, makeFakeConnection } from "../support/FakeConnection.ts"
import { binarySession, envelope, lastConnId, type Line, phoneSession, withCore } from "../support/Sessions.ts"

const INTERNAL_ERROR = { code: 1011, reason: "internal error" }
/** A frame whose bytes must never reach a log line. */
const SECRET = "\"secret-frame-7f3a\""

const failures = (lines: ReadonlyArray<Line>) => lines.filter((l) => l.message === "session failed")

/** Exactly one `session failed` line: error level, allowlisted keys, no frame bytes. */
const failedOnce = (lines: ReadonlyArray<Line>, expected: Record<string, unknown>) => {
  const failed = failures(lines)
  assert.strictEqual(failed.length, 1, `session failed lines: ${JSON.stringify(failed)}`)
  assert.strictEqual(failed[0]!.level, "Error")
  assert.deepStrictEqual(failed[0]!.fields, expected)
  for (const line of lines) assert.notInclude(JSON.stringify(line), "secret-frame")
}

/** A binary holding "s" and one registered phone. */
const slotWithPhone = (lines: Array<Line>, options: { readonly phone?: FakeConnection } = {}) =>
  Effect.gen(function*() {
    const binary = yield* makeFakeConnection()
    const binaryFiber = yield* binarySession(binary)
    yield* settle
    const phone = options.phone ?? (yield* makeFakeConnection())
    const phoneFiber = yield* phoneSession(phone)
    yield* settle
    return { binary, binaryFiber, phone, phoneFiber, connId: lastConnId(lines) }
  })

describe("a session that dies with a defect", () => {
  it.effect("binary forwarder: the binary is closed 1011 internal error, one `session failed` line, its slot goes to grace", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const { binary, binaryFiber, phone, connId } = yield* slotWithPhone(lines, {
          phone: yield* makeFakeConnection({ writes: "throw" })
        })
        const binaryConnId = lines.find((l) => l.message === "server claimed")!.fields.binary_conn_id

        binary.push(envelope(connId, SECRET)) // the phone's socket throws under the binary's routing pass
        yield* settle

        assert.deepStrictEqual(binary.closeCalls, [INTERNAL_ERROR])
        failedOnce(lines, { server_id: "s", binary_conn_id: binaryConnId, endpoint: "server", error: "session died" })
        assert.isDefined(binaryFiber.pollUnsafe())
        // As on any disconnect: the slot is in grace, its phone still registered, then expiry closes it 1000.
        assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 1 })
        assert.strictEqual(phone.closeCalls.length, 0)
        yield* TestClock.adjust("30 seconds")
        assert.deepStrictEqual(phone.closeCalls, [{ code: 1000, reason: "" }])
        assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
      })
    ))

  it.effect("a binary that never answers the 1011 is destroyed after the close timeout, and only then goes to grace", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const binary = yield* makeFakeConnection({ answersClose: false })
        yield* binarySession(binary)
        yield* settle
        const phone = yield* makeFakeConnection({ writes: "throw" })
        yield* phoneSession(phone)
        yield* settle

        binary.push(envelope(lastConnId(lines), SECRET))
        yield* settle
        assert.deepStrictEqual(binary.closeCalls, [INTERNAL_ERROR])
        assert.isFalse(binary.terminated())
        assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 1 })
        yield* TestClock.adjust("4999 millis") // the close timeout is 5 s
        assert.isFalse(binary.terminated())
        yield* TestClock.adjust("1 millis")
        assert.isTrue(binary.terminated())
        assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 1 })
        assert.strictEqual(failures(lines).length, 1)
      })
    ))

  it.effect("phone forwarder: the phone is closed 1011 internal error, one line, and it leaves the registry; its binary stays", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const { binary, phone, phoneFiber, connId } = yield* slotWithPhone(lines)

        binary.writes = "throw" // the binary's socket throws under the phone's forwarder (and its close notice)
        phone.push(SECRET)
        yield* settle

        assert.deepStrictEqual(phone.closeCalls, [INTERNAL_ERROR])
        failedOnce(lines, { server_id: "s", conn_id: connId, endpoint: "client", error: "session died" })
        assert.isDefined(phoneFiber.pollUnsafe())
        assert.isUndefined(registry.phoneFor("s", connId))
        assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 0 })
        assert.strictEqual(binary.closeCalls.length, 0)
        assert.isTrue(binary.isOpen())
      })
    ))

  it.effect("outbox writer: the phone is closed 1011 internal error, one line, its binary hears a 1001 close notice", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const { binary, phone, phoneFiber, connId } = yield* slotWithPhone(lines, {
          phone: yield* makeFakeConnection({ writes: "stall" })
        })
        // 300 KiB unflushed: the next frames must wait for the writer (backpressure).
        binary.push(envelope(connId, JSON.stringify("x".repeat(300 * 1024))))
        yield* settle
        binary.push(envelope(connId, SECRET), envelope(connId, "2"))
        yield* settle
        assert.strictEqual(phone.sent.length, 1)

        phone.writes = "throw"
        phone.flush() // the writer wakes and its next write throws
        yield* settle

        assert.deepStrictEqual(phone.closeCalls, [INTERNAL_ERROR])
        failedOnce(lines, { server_id: "s", conn_id: connId, endpoint: "client", error: "outbox writer died" })
        assert.isDefined(phoneFiber.pollUnsafe())
        assert.isUndefined(registry.phoneFor("s", connId))
        assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 0 })
        // The relay ended the phone: the notice says 1001 (SPEC §2.4), and the binary is untouched.
        assert.deepStrictEqual(binary.sent, [`{"conn_id":"${connId}","close_code":1001}`])
        assert.strictEqual(binary.closeCalls.length, 0)
      })
    ))

  it.effect("a defect while the phone leaves (its close notice throws) still unregisters it, with one line", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const { binary, phone, phoneFiber, connId } = yield* slotWithPhone(lines)

        binary.writes = "throw"
        phone.peerClose(1000)
        yield* settle

        assert.isDefined(phoneFiber.pollUnsafe())
        assert.isUndefined(registry.phoneFor("s", connId))
        assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 0 })
        failedOnce(lines, { server_id: "s", conn_id: connId, endpoint: "client", error: "session teardown died" })
        assert.isTrue(binary.isOpen())
      })
    ))

  it.effect("sessions that end normally log no `session failed` line and close nothing twice", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const { binary, binaryFiber, phone, phoneFiber, connId } = yield* slotWithPhone(lines)
        phone.push("1")
        yield* settle
        phone.peerClose(1000)
        yield* settle
        assert.isDefined(phoneFiber.pollUnsafe())
        assert.deepStrictEqual(binary.sent, [envelope(connId, "1"), `{"conn_id":"${connId}","close_code":1000}`])
        binary.peerClose(1006)
        yield* settle
        assert.isDefined(binaryFiber.pollUnsafe())
        assert.strictEqual(phone.closeCalls.length, 0)
        assert.strictEqual(binary.closeCalls.length, 0)
        assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 0 })
        assert.strictEqual(failures(lines).length, 0)
      })
    ))
})

describe("a session interrupted (the relay stopping)", () => {
  it.effect("closes its connection 1001 shutting down, and the phone leaves the registry with its close notice", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const { binary, phone, phoneFiber, connId } = yield* slotWithPhone(lines)

        yield* Fiber.interrupt(phoneFiber)

        assert.deepStrictEqual(phone.closeCalls, [{ code: 1001, reason: "shutting down" }])
        assert.isUndefined(registry.phoneFor("s", connId))
        assert.deepStrictEqual(binary.sent, [`{"conn_id":"${connId}","close_code":1001}`])
        assert.strictEqual(failures(lines).length, 0)
      })
    ))
})

describe("conflict probe: a newcomer that leaves during the probe", () => {
  it.effect("never takes the slot: the incumbent stays holder, its phones untouched, no takeover counted", () =>
    withCore((lines) =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const incumbent = yield* makeFakeConnection({ answersPings: false })
        yield* binarySession(incumbent)
        yield* settle
        const phone = yield* makeFakeConnection()
        yield* phoneSession(phone)
        yield* settle
        const newcomer = yield* makeFakeConnection()
        const newcomerFiber = yield* binarySession(newcomer)
        yield* settle
        assert.strictEqual(incumbent.pings(), 1)

        yield* TestClock.adjust("2 seconds")
        newcomer.peerClose(1006)
        yield* settle
        // Its session ends as soon as it is gone, not at the probe's timeout.
        assert.isDefined(newcomerFiber.pollUnsafe())
        yield* TestClock.adjust("10 seconds")
        yield* settle

        assert.strictEqual(registry.binaryFor("s")?.conn, incumbent)
        assert.strictEqual(incumbent.closeCalls.length, 0)
        assert.strictEqual(phone.closeCalls.length, 0)
        assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 1 })
        assert.strictEqual(yield* count(Metrics.takeovers), 0)
        assert.strictEqual(yield* count(Metrics.upgradeAttempts.server.accept), 1)
        assert.strictEqual(yield* count(Metrics.upgradeAttempts.server.reject_409), 0)
        assert.strictEqual(lines.filter((l) => l.message === "server takeover").length, 0)
      })
    ))

  it.effect("the incumbent gone too: the slot goes to grace by the incumbent's own release, never to the newcomer", () =>
    withCore(() =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const incumbent = yield* makeFakeConnection({ answersPings: false })
        yield* binarySession(incumbent)
        yield* settle
        const phone = yield* makeFakeConnection()
        yield* phoneSession(phone)
        yield* settle
        const newcomer = yield* makeFakeConnection()
        yield* binarySession(newcomer)
        yield* settle

        yield* TestClock.adjust("2 seconds")
        newcomer.peerClose(1006)
        yield* settle
        yield* TestClock.adjust("2 seconds")
        incumbent.peerClose(1006) // its ping fails now: the probe would say "dead"
        yield* settle

        assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 1 })
        assert.strictEqual(phone.closeCalls.length, 0)
        assert.strictEqual(yield* count(Metrics.takeovers), 0)
        assert.strictEqual(yield* count(Metrics.graceReclaims), 0)
        yield* TestClock.adjust("30 seconds")
        assert.deepStrictEqual(phone.closeCalls, [{ code: 1000, reason: "" }])
        assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
      })
    ))

  it.effect("the probe is interruptible: a newcomer interrupted during it (the relay stopping) is closed 1001 at once", () =>
    withCore(() =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const incumbent = yield* makeFakeConnection({ answersPings: false })
        yield* binarySession(incumbent)
        yield* settle
        const newcomer = yield* makeFakeConnection()
        const newcomerFiber = yield* binarySession(newcomer)
        yield* settle

        yield* Fiber.interrupt(newcomerFiber) // returns only once the session ended: no clock time passes

        assert.deepStrictEqual(newcomer.closeCalls, [{ code: 1001, reason: "shutting down" }])
        assert.strictEqual(registry.binaryFor("s")?.conn, incumbent)
        assert.strictEqual(incumbent.closeCalls.length, 0)
        assert.strictEqual(yield* count(Metrics.takeovers), 0)
        assert.strictEqual(yield* count(Metrics.upgradeAttempts.server.reject_409), 0)
      })
    ))

  it.effect("a newcomer that stays still takes over a silent incumbent at the probe timeout", () =>
    withCore(() =>
      Effect.gen(function*() {
        const registry = yield* Registry
        const incumbent = yield* makeFakeConnection({ answersPings: false })
        yield* binarySession(incumbent)
        yield* settle
        const phone = yield* makeFakeConnection()
        yield* phoneSession(phone)
        yield* settle
        const newcomer = yield* makeFakeConnection()
        const newcomerFiber = yield* binarySession(newcomer)
        yield* settle

        yield* TestClock.adjust("9999 millis")
        assert.strictEqual(registry.binaryFor("s")?.conn, incumbent)
        yield* TestClock.adjust("1 millis")
        yield* settle
        assert.strictEqual(registry.binaryFor("s")?.conn, newcomer)
        assert.deepStrictEqual(phone.closeCalls, [{ code: 4404, reason: "binary reclaimed server-id" }])
        assert.deepStrictEqual(incumbent.closeCalls, [{ code: 1011, reason: "heartbeat timeout" }])
        assert.strictEqual(yield* count(Metrics.takeovers), 1)
        assert.isUndefined(newcomerFiber.pollUnsafe())
        newcomer.peerClose(1000)
        yield* Fiber.join(newcomerFiber)
      })
    ))
})
