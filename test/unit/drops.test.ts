/**
 * Every frame that is not forwarded is counted (SPEC §8.2, "every drop has a counted reason"):
 * what an outbox discards when its phone is closed from outside (reclaim or takeover 4404, grace
 * expiry, shutdown) or its session ends, and the frames of a read batch whose write failed.
 * Each test checks that forwarded + dropped accounts for every frame the binary sent.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import { TestClock } from "effect/testing"
import { Ledger } from "../../src/connection/BufferLedger.ts"
import { RelayConfig } from "../../src/config/RelayConfig.ts"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import * as Outbox from "../../src/outbox/Outbox.ts"
import { forwardPhone } from "../../src/forwarding/PhoneForwarder.ts"
import { ConnectionWatcher } from "../../src/liveness/ConnectionWatcher.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import type { PhoneHandle } from "../../src/registry/Handles.ts"
import { makeRegistry, Registry, type RegistryShape } from "../../src/registry/Registry.ts"
import { Lifecycle } from "../../src/lifecycle/Lifecycle.ts"
import * as Session from "../../src/session/Session.ts"
import { bigLedger, binaryHandle, count, isolated, phoneHandle, settle } from "../support/Core.ts"
import { type FakeConnection, makeFakeConnection } from "../support/FakeConnection.ts"

/** Past the socket's 256 KiB high-water mark: the frames after it wait in the outbox. */
const LARGE = 300_000
const QUEUED = 3

/**
 * One frame in flight (handed to a socket that does not flush) and `QUEUED` frames waiting in
 * the outbox, as a routing pass leaves them.
 */
const fill = (outbox: Outbox.Outbox, context: Context.Context<never>) => {
  outbox.offer(Buffer.alloc(LARGE, 0x31), 0)
  outbox.flush(context)
  for (let i = 0; i < QUEUED; i++) outbox.offer(Buffer.from(`"${i}"`), 0)
  assert.isTrue(outbox.flush(context))
}

/** Every frame is accounted for: the queued ones under `reason`, the one in flight as `phone_write_failed`. */
const accounted = (reason: Metrics.DropReason) =>
  Effect.gen(function*() {
    assert.strictEqual(yield* count(Metrics.framesDropped[reason]), QUEUED)
    assert.strictEqual(yield* count(Metrics.framesDropped.phone_write_failed), 1)
    assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 0)
  })

const withPhone = Effect.gen(function*() {
  const registry = yield* makeRegistry({ gracePeriod: Duration.seconds(30), maxPhonesPerServer: 16, scope: yield* Effect.scope })
  const binary = binaryHandle("s", yield* makeFakeConnection())
  yield* registry.claim(binary)
  const conn = yield* makeFakeConnection({ writes: "stall" })
  const phone = yield* registry.registerPhone("s", phoneHandle(conn))
  fill(phone.outbox, yield* Effect.context<never>())
  return { registry, binary, phone, conn }
})

const closedWith = (conn: FakeConnection, close: CloseCodes.CloseCode) => assert.deepStrictEqual(conn.closeCalls, [close])

describe("frames an outbox discards when its phone is closed from outside", () => {
  it.effect("reclaim (4404): `evicted`", () =>
    isolated(Effect.gen(function*() {
      const { binary, conn, registry } = yield* withPhone
      yield* registry.release(binary)
      assert.strictEqual((yield* registry.claim(binaryHandle("s", yield* makeFakeConnection())))._tag, "Reclaimed")
      closedWith(conn, CloseCodes.Reclaimed)
      yield* accounted("evicted")
    })))

  it.effect("takeover (4404): `evicted`", () =>
    isolated(Effect.gen(function*() {
      const { binary, conn, registry } = yield* withPhone
      assert.strictEqual(yield* registry.takeover(binaryHandle("s", yield* makeFakeConnection()), binary), "TookOver")
      closedWith(conn, CloseCodes.Reclaimed)
      yield* accounted("evicted")
    })))

  it.effect("grace expiry (1000): `grace_expired`", () =>
    isolated(Effect.gen(function*() {
      const { binary, conn, registry } = yield* withPhone
      yield* registry.release(binary)
      yield* TestClock.adjust("30 seconds")
      closedWith(conn, CloseCodes.Normal)
      yield* accounted("grace_expired")
    })))

  it.effect("shutdown (1001): `shutdown`", () =>
    isolated(Effect.gen(function*() {
      const { conn, registry } = yield* withPhone
      yield* registry.closeAll(CloseCodes.ShuttingDown)
      closedWith(conn, CloseCodes.ShuttingDown)
      yield* accounted("shutdown")
    })))
})

// --- sessions ------------------------------------------------------------------------------------

const services = Layer.mergeAll(Registry.layer, Ledger.layer, ConnectionWatcher.layer, Lifecycle.layer).pipe(
  Layer.provideMerge(RelayConfig.layerFromValues())
)

/** A binary and a phone running their real sessions over in-memory connections. */
const sessions = Effect.gen(function*() {
  const binaryConn = yield* makeFakeConnection()
  yield* Effect.forkChild(Session.run({ endpoint: "server", info: { serverId: "s", version: "t" } }, Effect.succeed(binaryConn)))
  yield* settle
  const phoneConn = yield* makeFakeConnection({ writes: "stall", ledger: yield* Ledger })
  const phoneSession = yield* Effect.forkChild(Session.run({ endpoint: "client", info: { serverId: "s", deviceName: undefined } }, Effect.succeed(phoneConn)))
  yield* settle
  phoneConn.push(`"hello"`)
  yield* settle
  const connId = (JSON.parse(binaryConn.sent[0]!) as { conn_id: string }).conn_id
  const envelope = (frame: string) => `{"conn_id":"${connId}","frame":${frame}}`
  binaryConn.push(envelope(`"${"x".repeat(LARGE)}"`))
  yield* settle
  binaryConn.push(...Array.from({ length: QUEUED }, (_, i) => envelope(`${i}`)))
  yield* settle
  assert.strictEqual(phoneConn.sent.length, 1) // the rest waits behind the high-water mark
  return { binaryConn, phoneConn, phoneSession }
})

describe("frames an outbox discards when its phone's session ends", () => {
  it.effect("the phone sends invalid JSON: its queued frames are `session_ended`, its message `invalid_json`", () =>
    isolated(Effect.gen(function*() {
      const { phoneConn, phoneSession } = yield* sessions
      phoneConn.push("not json")
      yield* Fiber.join(phoneSession)
      assert.deepStrictEqual(phoneConn.closedWith(), CloseCodes.Normal)
      assert.strictEqual(yield* count(Metrics.framesDropped.invalid_json), 1)
      yield* accounted("session_ended")
    }).pipe(Effect.provide(services))))

  it.effect("a session that ends any other way (here: interrupted) drops and counts what is still queued", () =>
    isolated(Effect.gen(function*() {
      const { phoneConn, phoneSession } = yield* sessions
      const ledger = yield* Ledger
      assert.isTrue(ledger.holders.has(phoneConn))
      const held = ledger.bytes
      yield* Effect.forkChild(Fiber.interrupt(phoneSession))
      yield* settle
      assert.strictEqual(yield* count(Metrics.framesDropped.session_ended), QUEUED)
      // The interrupted session closes its phone (1001) and waits for the socket to be gone; the
      // frame that was in flight is given up with it.
      assert.isAbove(held, QUEUED * (1 + Outbox.ITEM_OVERHEAD))
      assert.deepStrictEqual(phoneConn.closedWith(), CloseCodes.ShuttingDown)
      assert.strictEqual(ledger.bytes, 0)
      assert.isFalse(ledger.holders.has(phoneConn))
      assert.strictEqual(yield* count(Metrics.framesDropped.phone_write_failed), 1)
    }).pipe(Effect.provide(services))))
})

describe("a read batch whose write to the binary failed", () => {
  const setup = (binaryWrites: "fail" | "absent") =>
    Effect.gen(function*() {
      const registry: RegistryShape = yield* makeRegistry({
        gracePeriod: Duration.seconds(30),
        maxPhonesPerServer: 16,
        scope: yield* Effect.scope
      })
      const binaryConn = yield* makeFakeConnection()
      const binary = binaryHandle("s", binaryConn)
      yield* registry.claim(binary)
      const conn = yield* makeFakeConnection()
      const phone: PhoneHandle = yield* registry.registerPhone("s", phoneHandle(conn))
      if (binaryWrites === "fail") binaryConn.writes = "fail"
      else yield* registry.release(binary)
      return { registry, conn, phone }
    })

  for (const [binaryWrites, tag] of [["fail", "BinaryWriteFailed"], ["absent", "NoBinary"]] as const) {
    it.effect(`${tag}: the failure counts the whole batch, the invalid message after the valid ones included`, () =>
      isolated(Effect.gen(function*() {
        const { conn, phone, registry } = yield* setup(binaryWrites)
        conn.push("1", "2", "not json", "4")
        const error = yield* Effect.flip(forwardPhone(phone, { registry, ledger: bigLedger(), binaryBudget: 4_194_304 }))
        assert.strictEqual(error._tag, tag)
        assert.strictEqual(error.frames, 4)
      })))
  }
})
