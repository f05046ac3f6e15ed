/**
 * The relay-wide memory bound sheds the largest backlogs first (SPEC §7.4): the choice of
 * victims (`makeRoom`), a phone's outbox as victim and as enqueuer, a binary as victim and as
 * enqueuer, and that a victim's bytes are released before the enqueue returns.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { type BufferLedger, type Holder, makeBufferLedger, makeRoom } from "../../src/connection/BufferLedger.ts"
import type { PeerConnection } from "../../src/connection/PeerConnection.ts"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import { forwardPhone } from "../../src/forwarding/PhoneForwarder.ts"
import * as Outbox from "../../src/outbox/Outbox.ts"
import { trackBinary } from "../../src/forwarding/Shedding.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import { makeRegistry } from "../../src/registry/Registry.ts"
import { binaryHandle, count, isolated, phoneHandle, settle } from "../support/Core.ts"
import { type FakeConnection, makeFakeConnection, type WriteMode } from "../support/FakeConnection.ts"

/** A holder of `bytes` (already counted in `ledger`) that records when it is shed. */
const fakeHolder = (ledger: BufferLedger, name: string, bytes: number, shedOrder: Array<string>) => {
  let held = bytes
  ledger.bytes += bytes
  const conn = { name } as unknown as PeerConnection
  const holder: Holder = {
    heldBytes: () => held,
    shed: () => {
      ledger.bytes -= held
      held = 0
      shedOrder.push(name)
      return 2
    },
    fields: { conn_id: name }
  }
  ledger.holders.set(conn, holder)
  return conn
}

describe("makeRoom", () => {
  it("sheds the largest holder only, and the bytes fit before it returns", () => {
    const ledger = makeBufferLedger(1000)
    const order: Array<string> = []
    fakeHolder(ledger, "a", 300, order)
    fakeHolder(ledger, "b", 500, order)
    fakeHolder(ledger, "c", 100, order)
    const enqueuer = fakeHolder(ledger, "e", 50, order)
    const room = makeRoom(ledger, 200, enqueuer)
    assert.deepStrictEqual(room, { fits: true, shed: [{ frames: 2, fields: { conn_id: "b" } }] })
    assert.deepStrictEqual(order, ["b"])
    assert.strictEqual(ledger.bytes, 450)
    // A shed holder leaves the ledger's holders: it is never chosen again.
    assert.deepStrictEqual([...ledger.holders.values()].map((h) => h.fields.conn_id), ["a", "c", "e"])
  })

  it("sheds in order of size until the bytes fit", () => {
    // The ledger is over its bound (bytes sent without asking, like close notices, or held by a
    // connection no session tracks): one victim is not enough.
    const ledger = makeBufferLedger(1000)
    ledger.bytes = 650
    const order: Array<string> = []
    fakeHolder(ledger, "a", 150, order)
    fakeHolder(ledger, "b", 250, order)
    fakeHolder(ledger, "c", 200, order)
    const enqueuer = fakeHolder(ledger, "e", 0, order)
    const room = makeRoom(ledger, 100, enqueuer)
    assert.isTrue(room.fits)
    assert.deepStrictEqual(order, ["b", "c"])
    assert.strictEqual(ledger.bytes, 800)
  })

  it("the enqueuer holding the largest backlog (counting the new bytes) is the one refused; nobody is shed", () => {
    const ledger = makeBufferLedger(1000)
    const order: Array<string> = []
    fakeHolder(ledger, "a", 300, order)
    const enqueuer = fakeHolder(ledger, "e", 500, order)
    assert.deepStrictEqual(makeRoom(ledger, 250, enqueuer), { fits: false, shed: [] })
    // Counting its new bytes it would hold 300 + 1: more than "a" already.
    const ledger2 = makeBufferLedger(1000)
    fakeHolder(ledger2, "a", 300, order)
    fakeHolder(ledger2, "b", 300, order)
    const small = fakeHolder(ledger2, "e", 299, order)
    assert.deepStrictEqual(makeRoom(ledger2, 102, small), { fits: false, shed: [] })
    assert.deepStrictEqual(order, [])
  })

  it("the enqueuer loses a tie", () => {
    const ledger = makeBufferLedger(1000)
    const order: Array<string> = []
    fakeHolder(ledger, "a", 600, order)
    const enqueuer = fakeHolder(ledger, "e", 100, order)
    assert.isFalse(makeRoom(ledger, 500, enqueuer).fits)
    assert.isTrue(makeRoom(ledger, 499, enqueuer).fits)
    assert.deepStrictEqual(order, ["a"])
  })

  it("an untracked enqueuer is measured by its new bytes alone", () => {
    const ledger = makeBufferLedger(1000)
    const order: Array<string> = []
    fakeHolder(ledger, "a", 900, order)
    assert.isTrue(makeRoom(ledger, 200, { name: "x" } as unknown as PeerConnection).fits)
    assert.deepStrictEqual(order, ["a"])
  })
})

// --- phones and binaries over in-memory connections ---------------------------------------------

interface Phone {
  readonly conn: FakeConnection
  readonly outbox: Outbox.Outbox
}

/** A phone whose outbox is tracked in `ledger` (until its connection is gone). */
const phone = (ledger: BufferLedger, name: string, writes: WriteMode, budget = 1_000_000) =>
  Effect.gen(function*() {
    const conn = yield* makeFakeConnection({ writes, ledger })
    const outbox = Outbox.make({ conn, budget, ledger, scope: yield* Effect.scope })
    outbox.track({ conn_id: name })
    return { conn, outbox } satisfies Phone
  })

/** Offers frames of `size` bytes and writes them through, as one routing pass would. */
const deliver = (p: Phone, frames: number, size: number, context: Context.Context<never>) => {
  for (let i = 0; i < frames; i++) assert.strictEqual(p.outbox.offer(Buffer.alloc(size, 0x31), 0)._tag, "Accepted")
  p.outbox.flush(context)
}

const sum = (phones: ReadonlyArray<Phone>) => phones.reduce((n, p) => n + p.outbox.heldBytes(), 0)

describe("a phone's outbox under the relay-wide budget", () => {
  it.effect("stalled phones fill the budget: a reading phone's frame sheds the largest, whose bytes are released at once", () =>
    isolated(Effect.gen(function*() {
      const context = yield* Effect.context<never>()
      const ledger = makeBufferLedger(10_000)
      const stalled = [
        yield* phone(ledger, "s1", "stall"),
        yield* phone(ledger, "s2", "stall"),
        yield* phone(ledger, "s3", "stall")
      ]
      const reader = yield* phone(ledger, "reader", "flush")
      deliver(stalled[0]!, 3, 1000, context)
      deliver(stalled[1]!, 4, 1000, context) // the largest
      deliver(stalled[2]!, 2, 1000, context)
      const before = ledger.bytes
      assert.strictEqual(before, sum(stalled))
      const largest = stalled[1]!.outbox.heldBytes()
      assert.isAbove(before + 2000 + Outbox.ITEM_OVERHEAD, ledger.max)

      const result = reader.outbox.offer(Buffer.alloc(2000, 0x32), 0)
      if (result._tag !== "Accepted") return assert.fail(result._tag)
      // Released synchronously: before the offer returned.
      assert.strictEqual(ledger.bytes, before - largest + 2000 + Outbox.ITEM_OVERHEAD)
      assert.deepStrictEqual(result.shed, [{ frames: 0, fields: { conn_id: "s2" } }])
      assert.deepStrictEqual(stalled[1]!.conn.closeCalls, [CloseCodes.PhoneBacklogFull])
      assert.isTrue(stalled[1]!.conn.terminated())
      assert.strictEqual(stalled[1]!.outbox.heldBytes(), 0)
      // Its frames in flight were dropped by the shed.
      assert.strictEqual(yield* count(Metrics.framesDropped.backlog_full), 4)
      assert.strictEqual(yield* count(Metrics.framesDropped.phone_write_failed), 0)
      // Nobody else was touched; the reader's frame is written.
      for (const s of [stalled[0]!, stalled[2]!]) assert.deepStrictEqual(s.conn.closeCalls, [])
      reader.outbox.flush(context)
      assert.strictEqual(reader.conn.sent.length, 1)
      assert.deepStrictEqual(reader.conn.closeCalls, [])
      // The shed phone refuses what comes next, as an overflowed one does.
      assert.deepStrictEqual(stalled[1]!.outbox.offer(Buffer.from("1"), 0), { _tag: "Refused", reason: "backlog_full", frames: 1 })
    })))

  it.effect("queued frames of a shed phone are reported; a queued directive's code closes it", () =>
    isolated(Effect.gen(function*() {
      const context = yield* Effect.context<never>()
      const ledger = makeBufferLedger(550_500)
      const stalled = yield* phone(ledger, "s", "stall")
      const reader = yield* phone(ledger, "reader", "flush")
      // Past the socket's high-water mark, the rest waits in the outbox.
      deliver(stalled, 1, 300_000, context)
      for (let i = 0; i < 5; i++) stalled.outbox.offer(Buffer.alloc(50_000, 0x31), 0)
      stalled.outbox.offer(undefined, 4001)
      assert.isTrue(stalled.outbox.flush(context))
      const result = reader.outbox.offer(Buffer.alloc(100, 0x32), 0)
      assert.deepStrictEqual(result, { _tag: "Accepted", shed: [{ frames: 5, fields: { conn_id: "s" } }] })
      assert.deepStrictEqual(stalled.conn.closeCalls, [{ code: 4001, reason: "" }])
      assert.strictEqual(ledger.bytes, 100 + Outbox.ITEM_OVERHEAD)
      assert.strictEqual(yield* count(Metrics.framesDropped.backlog_full), 1) // the one in flight
    })))

  it.effect("the phone holding the largest backlog is the one that overflows; the others keep theirs", () =>
    isolated(Effect.gen(function*() {
      const context = yield* Effect.context<never>()
      const ledger = makeBufferLedger(10_000)
      const small = yield* phone(ledger, "small", "stall")
      const large = yield* phone(ledger, "large", "stall")
      deliver(small, 2, 1000, context)
      deliver(large, 7, 1000, context)
      const result = large.outbox.offer(Buffer.alloc(1000, 0x31), 0)
      assert.deepStrictEqual(result, { _tag: "Overflow", dropped: 1, close: CloseCodes.PhoneBacklogFull, shed: [] })
      assert.deepStrictEqual(small.conn.closeCalls, [])
      assert.strictEqual(small.outbox.heldBytes(), 2000)
    })))

  it.effect("a binary holding the largest backlog is shed: aborted 1011 `binary backlog full`, its bytes released", () =>
    isolated(Effect.gen(function*() {
      const ledger = makeBufferLedger(10_000)
      const binaryConn = yield* makeFakeConnection({ writes: "stall", ledger })
      trackBinary(ledger, binaryConn, { binary_conn_id: "b" })
      binaryConn.send([Buffer.alloc(9000, 0x31)])
      const reader = yield* phone(ledger, "reader", "flush")
      const result = reader.outbox.offer(Buffer.alloc(2000, 0x32), 0)
      assert.deepStrictEqual(result, { _tag: "Accepted", shed: [{ frames: 0, fields: { binary_conn_id: "b" } }] })
      assert.deepStrictEqual(binaryConn.closeCalls, [CloseCodes.BinaryBacklogFull])
      assert.isTrue(binaryConn.terminated())
      assert.strictEqual(ledger.bytes, 2000 + Outbox.ITEM_OVERHEAD)
    })))
})

describe("tracking", () => {
  it.effect("a connection leaves the ledger's holders once its socket is gone; one already gone is never added", () =>
    Effect.gen(function*() {
      const ledger = makeBufferLedger(10_000)
      const p = yield* phone(ledger, "p", "stall")
      const binaryConn = yield* makeFakeConnection({ ledger })
      trackBinary(ledger, binaryConn, { binary_conn_id: "b" })
      assert.strictEqual(ledger.holders.size, 2)
      p.conn.peerClose()
      binaryConn.peerClose(1006)
      assert.strictEqual(ledger.holders.size, 0)
      p.outbox.track({ conn_id: "p" })
      trackBinary(ledger, binaryConn, { binary_conn_id: "b" })
      assert.strictEqual(ledger.holders.size, 0)
    }))
})

describe("a phone's frames towards its binary under the relay-wide budget", () => {
  const setup = (ledger: BufferLedger) =>
    Effect.gen(function*() {
      const registry = yield* makeRegistry({ gracePeriod: Duration.seconds(30), maxPhonesPerServer: 16, scope: yield* Effect.scope })
      const binaryConn = yield* makeFakeConnection({ writes: "stall", ledger })
      const binary = binaryHandle("s", binaryConn)
      yield* registry.claim(binary)
      trackBinary(ledger, binaryConn, { binary_conn_id: binary.connId })
      const conn = yield* makeFakeConnection()
      const sender = yield* registry.registerPhone("s", phoneHandle(conn, { ledger }))
      return { registry, binaryConn, conn, sender }
    })

  it.effect("a stalled phone of another server-id holding more is shed and the frame is written", () =>
    isolated(Effect.gen(function*() {
      const context = yield* Effect.context<never>()
      const ledger = makeBufferLedger(10_000)
      const { binaryConn, conn, registry, sender } = yield* setup(ledger)
      const stalled = yield* phone(ledger, "other", "stall")
      deliver(stalled, 9, 1000, context)
      const forwarder = yield* Effect.forkChild(forwardPhone(sender, { registry, ledger, binaryBudget: 1_000_000 }))
      const frame = `"${"x".repeat(1500)}"`
      conn.push(frame)
      yield* settle
      assert.deepStrictEqual(binaryConn.sent, [`${sender.envelopePrefix}${frame}}`])
      assert.deepStrictEqual(stalled.conn.closeCalls, [CloseCodes.PhoneBacklogFull])
      assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 1)
      assert.strictEqual(yield* count(Metrics.framesDropped.backlog_full), 9)
      yield* Fiber.interrupt(forwarder)
    })))

  it.effect("when the binary holds the largest backlog, the sending phone's frame is the one refused", () =>
    isolated(Effect.gen(function*() {
      const context = yield* Effect.context<never>()
      const ledger = makeBufferLedger(10_000)
      const { binaryConn, conn, registry, sender } = yield* setup(ledger)
      const other = yield* phone(ledger, "other", "stall")
      deliver(other, 2, 1000, context)
      binaryConn.send([Buffer.alloc(7000, 0x31)])
      conn.push(`"${"x".repeat(1500)}"`)
      const error = yield* Effect.flip(forwardPhone(sender, { registry, ledger, binaryBudget: 1_000_000 }))
      assert.strictEqual(error._tag, "BinaryWriteFailed")
      assert.deepStrictEqual(other.conn.closeCalls, [])
      assert.deepStrictEqual(binaryConn.closeCalls, [])
      assert.strictEqual(binaryConn.sent.length, 1)
    })))
})
