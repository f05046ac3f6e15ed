/**
 * The per-phone outbox (SPEC §4.3): FIFO, directives, the byte budget, write failures, and that
 * every byte it took from the relay-wide ledger is given back.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { type BufferLedger, makeBufferLedger } from "../../src/connection/BufferLedger.ts"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import * as Outbox from "../../src/outbox/Outbox.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import { bigLedger, count, isolated, settle } from "../support/Core.ts"
import { makeFakeConnection, type WriteMode } from "../support/FakeConnection.ts"

const frame = (n: number, size = 10) => JSON.stringify(`${n}`.padEnd(size - 2, "."))

const cost = (text: string) => Buffer.byteLength(text) + Outbox.ITEM_OVERHEAD

const setup = (options: { readonly writes?: WriteMode; readonly budget?: number; readonly ledger?: BufferLedger } = {}) =>
  Effect.gen(function*() {
    const ledger = options.ledger ?? bigLedger()
    const conn = yield* makeFakeConnection({ writes: options.writes ?? "flush", ledger })
    const outbox = Outbox.make({ conn, budget: options.budget ?? 4_194_304, ledger, scope: yield* Effect.scope })
    return { conn, outbox, ledger }
  })

/** What the binary forwarder does after a routing pass: write through, else start the writer. */
const deliver = (outbox: Outbox.Outbox) =>
  Effect.andThen(
    Effect.contextWith((context: Context.Context<never>) => (outbox.flush(context) ? outbox.startWriter : Effect.void)),
    settle
  )

/** Offers a frame given as text: the outbox takes bytes (views into a read, in the relay). */
const offer = (outbox: Outbox.Outbox, frame: string | undefined, closeCode: number) =>
  outbox.offer(frame === undefined ? undefined : Buffer.from(frame), closeCode)

/** Runs the writer as a fiber of its own (to join it), and lets it reach its first wait. */
const runWriter = (outbox: Outbox.Outbox) => Effect.tap(Effect.forkChild(outbox.run), () => settle)

describe("outbox", () => {
  it.effect("writes frames in FIFO order as one batch and counts each only once it is flushed", () =>
    isolated(Effect.gen(function*() {
      const { conn, ledger, outbox } = yield* setup({ writes: "stall" })
      const frames = [1, 2, 3, 4, 5, 6].map((n) => frame(n))

      // Offers of one routing pass leave together, in order.
      offer(outbox, frames[0], 0)
      offer(outbox, frames[1], 0)
      offer(outbox, frames[2], 0)
      offer(outbox, frames[3], 0)
      yield* deliver(outbox)
      assert.deepStrictEqual(conn.sent, frames.slice(0, 4))
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 0) // handed over, not flushed

      conn.flush()
      yield* settle
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 4)

      offer(outbox, frames[4], 0)
      offer(outbox, frames[5], 0)
      yield* deliver(outbox)
      conn.flush()
      yield* settle
      assert.deepStrictEqual(conn.sent, frames)
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 6)
      assert.strictEqual(
        yield* count(Metrics.bytesForwardedBinaryToPhone),
        frames.reduce((n, f) => n + f.length, 0)
      )
      assert.strictEqual(outbox.usedBytes(), 0)
      assert.strictEqual(ledger.bytes, 0)
    })))

  it.effect("flush writes the queue through at once while no writer runs, but never a directive", () =>
    isolated(Effect.gen(function*() {
      const { conn, outbox } = yield* setup({ writes: "stall" })
      const context = yield* Effect.context<never>()
      offer(outbox, "1", 0)
      offer(outbox, "2", 0)
      assert.isFalse(outbox.flush(context)) // nothing left for a writer
      assert.deepStrictEqual(conn.sent, ["1", "2"]) // synchronously, as one write
      offer(outbox, "3", 4000)
      assert.isTrue(outbox.flush(context))
      assert.deepStrictEqual(conn.sent, ["1", "2"]) // the directive is the writer's: it must wait for the flush
      yield* outbox.startWriter
      yield* settle
      assert.deepStrictEqual(conn.sent, ["1", "2", "3"])
      assert.strictEqual(conn.closeCalls.length, 0)
    })))

  it.effect("a writer ends once nothing is left: an idle phone has none, and the next pass starts it again", () =>
    isolated(Effect.gen(function*() {
      const { conn, outbox } = yield* setup({ writes: "stall" })
      const context = yield* Effect.context<never>()
      // Past the write high-water mark, later frames wait for the writer.
      const big = frame(0, 300 * 1024)
      offer(outbox, big, 0)
      assert.isFalse(outbox.flush(context))
      offer(outbox, "1", 0)
      assert.isTrue(outbox.flush(context))
      const writer = yield* runWriter(outbox)
      assert.isUndefined(writer.pollUnsafe()) // waiting for the socket to drain
      assert.isFalse(outbox.flush(context)) // a running writer takes what comes
      conn.flush()
      yield* Fiber.join(writer)
      assert.deepStrictEqual(conn.sent, [big, "1"])
      // No writer now; the next frames are written through again.
      offer(outbox, "2", 0)
      assert.isFalse(outbox.flush(context))
      assert.deepStrictEqual(conn.sent, [big, "1", "2"])
    })))

  it.effect("a directive closes only after the frames queued before it were written", () =>
    isolated(Effect.gen(function*() {
      const { conn, ledger, outbox } = yield* setup({ writes: "stall" })
      offer(outbox, "1", 0)
      offer(outbox, "2", 0)
      assert.deepStrictEqual(offer(outbox, "\"bye\"", 4000), { _tag: "Accepted", shed: [] })
      const writer = yield* runWriter(outbox)
      assert.deepStrictEqual(conn.sent, ["1", "2", "\"bye\""])
      assert.strictEqual(conn.closeCalls.length, 0) // not before they are written

      conn.flush(2) // "1" written, "2" not yet
      yield* settle
      assert.strictEqual(conn.closeCalls.length, 0)

      conn.flush()
      yield* Fiber.join(writer)
      assert.deepStrictEqual(conn.closeCalls, [{ code: 4000, reason: "" }])
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 3)
      assert.strictEqual(ledger.bytes, 0)
      assert.strictEqual(outbox.usedBytes(), 0)
    })))

  it.effect("a directive without a frame closes after the earlier frames, writing nothing more", () =>
    isolated(Effect.gen(function*() {
      const { conn, outbox } = yield* setup({ writes: "stall" })
      offer(outbox, "1", 0)
      offer(outbox, undefined, 4001)
      const writer = yield* runWriter(outbox)
      assert.strictEqual(conn.closeCalls.length, 0)
      conn.flush()
      yield* Fiber.join(writer)
      assert.deepStrictEqual(conn.sent, ["1"])
      assert.deepStrictEqual(conn.closeCalls, [{ code: 4001, reason: "" }])
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 1)
    })))

  it.effect("frames and directives after a directive are refused", () =>
    isolated(Effect.gen(function*() {
      const { conn, outbox } = yield* setup()
      assert.deepStrictEqual(offer(outbox, undefined, 4000), { _tag: "Accepted", shed: [] })
      assert.deepStrictEqual(offer(outbox, "1", 0), { _tag: "Refused", reason: "closing", frames: 1 })
      assert.deepStrictEqual(offer(outbox, "2", 4001), { _tag: "Refused", reason: "closing", frames: 1 })
      yield* Fiber.join(yield* runWriter(outbox))
      assert.deepStrictEqual(conn.sent, [])
      assert.deepStrictEqual(conn.closeCalls, [{ code: 4000, reason: "" }])
    })))

  it.effect("overflow of a 1000-byte budget is reported once; later offers are refused", () =>
    isolated(Effect.gen(function*() {
      const { ledger, outbox } = yield* setup({ budget: 1000 })
      const big = frame(0, 300)
      assert.deepStrictEqual(offer(outbox, big, 0), { _tag: "Accepted", shed: [] })
      assert.deepStrictEqual(offer(outbox, big, 0), { _tag: "Accepted", shed: [] })
      assert.strictEqual(outbox.usedBytes(), 2 * cost(big))
      assert.deepStrictEqual(offer(outbox, big, 0), { _tag: "Overflow", dropped: 3, close: CloseCodes.PhoneBacklogFull, shed: [] })
      assert.deepStrictEqual(offer(outbox, big, 0), { _tag: "Refused", reason: "backlog_full", frames: 1 })
      assert.deepStrictEqual(offer(outbox, "1", 0), { _tag: "Refused", reason: "backlog_full", frames: 1 })
      assert.deepStrictEqual(offer(outbox, "1", 4000), { _tag: "Refused", reason: "backlog_full", frames: 1 })
      assert.strictEqual(outbox.usedBytes(), 0)
      assert.strictEqual(ledger.bytes, 0)
    })))

  it.effect("the item being written still counts against the budget until it is flushed", () =>
    isolated(Effect.gen(function*() {
      const { conn, outbox } = yield* setup({ writes: "stall", budget: 1000 })
      const big = frame(0, 300)
      offer(outbox, big, 0)
      offer(outbox, big, 0)
      yield* deliver(outbox)
      assert.deepStrictEqual(conn.sent, [big, big]) // in flight, not flushed
      assert.strictEqual(outbox.usedBytes(), 2 * cost(big))
      // Nothing is queued any more, yet the in-flight bytes still fill the budget.
      assert.deepStrictEqual(offer(outbox, big, 0), { _tag: "Overflow", dropped: 1, close: CloseCodes.PhoneBacklogFull, shed: [] })
    })))

  it.effect("a flushed item frees its budget", () =>
    isolated(Effect.gen(function*() {
      const { outbox } = yield* setup({ budget: 1000 })
      const big = frame(0, 300)
      for (let i = 0; i < 20; i++) {
        assert.deepStrictEqual(offer(outbox, big, 0), { _tag: "Accepted", shed: [] })
        yield* deliver(outbox)
      }
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 20)
    })))

  it.effect("an item costs its frame's UTF-8 bytes plus 64", () =>
    isolated(Effect.gen(function*() {
      const text = JSON.stringify("é🎉".repeat(10)) // 62 bytes, 32 UTF-16 units
      const { ledger, outbox } = yield* setup({ budget: cost(text) * 2 - 1 })
      assert.deepStrictEqual(offer(outbox, text, 0), { _tag: "Accepted", shed: [] })
      assert.strictEqual(outbox.usedBytes(), Buffer.byteLength(text) + 64)
      assert.strictEqual(ledger.bytes, Buffer.byteLength(text) + 64)
      assert.strictEqual(offer(outbox, text, 0)._tag, "Overflow")
    })))

  it.effect("an overflowing directive reports the directive's code", () =>
    isolated(Effect.gen(function*() {
      const { outbox } = yield* setup({ budget: 1000 })
      assert.deepStrictEqual(offer(outbox, frame(0, 900), 0), { _tag: "Accepted", shed: [] })
      assert.deepStrictEqual(offer(outbox, frame(1, 100), 4001), {
        _tag: "Overflow",
        dropped: 2,
        close: { code: 4001, reason: "" },
        shed: []
      })
    })))

  it.effect("an offer the relay-wide ledger cannot take is this phone's overflow", () =>
    isolated(Effect.gen(function*() {
      const ledger = makeBufferLedger(500)
      const { outbox } = yield* setup({ ledger })
      const big = frame(0, 300)
      assert.deepStrictEqual(offer(outbox, big, 0), { _tag: "Accepted", shed: [] })
      assert.strictEqual(ledger.bytes, cost(big))
      assert.deepStrictEqual(offer(outbox, big, 0), { _tag: "Overflow", dropped: 2, close: CloseCodes.PhoneBacklogFull, shed: [] })
      assert.strictEqual(ledger.bytes, 0)
    })))

  it.effect("a frame that must wait is copied out of the read it came from at the end of its pass", () =>
    isolated(Effect.gen(function*() {
      const { conn, outbox } = yield* setup({ writes: "stall" })
      // Fill the socket above the high-water mark: what comes next must wait for the writer.
      const big = Buffer.from(JSON.stringify("x".repeat(300 * 1024)))
      outbox.offer(big, 0)
      yield* deliver(outbox)
      assert.strictEqual(conn.sent.length, 1)

      // Two frames that are views into one read (as the binary forwarder hands them over), then a
      // directive: nothing of this pass can be written now.
      const read = Buffer.from("{\"conn_id\":\"c\",\"frame\":\"one\"}{\"conn_id\":\"c\",\"frame\":[2]}")
      const one = read.indexOf("\"one\"")
      const two = read.indexOf("[2]")
      outbox.offer(read.subarray(one, one + 5), 0)
      outbox.offer(read.subarray(two, two + 3), 4000)
      yield* deliver(outbox)
      // The read's buffer is reused (or freed) once the pass is over; the outbox must not care.
      read.fill(0x23)
      conn.flush()
      yield* settle
      conn.flush()
      yield* settle
      assert.deepStrictEqual(conn.sent.slice(1), ["\"one\"", "[2]"])
      assert.deepStrictEqual(conn.closeCalls, [{ code: 4000, reason: "" }])
    })))

  it.effect("a stalled phone does not delay a sibling's outbox", () =>
    isolated(Effect.gen(function*() {
      const ledger = bigLedger()
      const stalled = yield* setup({ writes: "stall", ledger })
      const healthy = yield* setup({ ledger })
      for (let i = 0; i < 5; i++) {
        offer(stalled.outbox, frame(i), 0)
        offer(healthy.outbox, frame(i), 0)
      }
      yield* deliver(stalled.outbox)
      yield* deliver(healthy.outbox)
      assert.strictEqual(healthy.conn.sent.length, 5)
      assert.strictEqual(stalled.conn.pendingBytes() > 0, true)
      // Only the healthy phone's frames were flushed, so only they count.
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 5)
    })))

  it.effect("a failed send stops the outbox, drops what is pending and closes 1011 phone write failed", () =>
    isolated(Effect.gen(function*() {
      const { conn, ledger, outbox } = yield* setup({ writes: "fail" })
      offer(outbox, "1", 0)
      yield* Fiber.join(yield* runWriter(outbox))
      assert.deepStrictEqual(conn.closeCalls, [CloseCodes.PhoneWriteFailed])
      assert.strictEqual(conn.closedWith()?.reason, "phone write failed")
      assert.strictEqual(yield* count(Metrics.framesDropped.phone_write_failed), 1)
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 0)
      assert.deepStrictEqual(offer(outbox, "2", 0), { _tag: "Refused", reason: "phone_write_failed", frames: 1 })
      assert.strictEqual(outbox.usedBytes(), 0)
      assert.strictEqual(ledger.bytes, 0)
    })))

  it.effect("a socket lost during a write drops the frame in flight and everything queued", () =>
    isolated(Effect.gen(function*() {
      const { conn, ledger, outbox } = yield* setup({ writes: "stall" })
      offer(outbox, "1", 0)
      offer(outbox, "2", 0)
      offer(outbox, "3", 0)
      yield* deliver(outbox)
      offer(outbox, "4", 0) // queued, never written
      conn.peerClose(1006)
      assert.strictEqual(yield* count(Metrics.framesDropped.phone_write_failed), 4)
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 0)
      assert.deepStrictEqual(offer(outbox, "5", 0), { _tag: "Refused", reason: "phone_write_failed", frames: 1 })
      assert.strictEqual(outbox.usedBytes(), 0)
      assert.strictEqual(ledger.bytes, 0)
    })))

  it.effect("stop drops everything pending, releases its ledger bytes and ends the writer", () =>
    isolated(Effect.gen(function*() {
      const { conn, ledger, outbox } = yield* setup({ writes: "stall" })
      // Past the write high-water mark the writer waits for a flush; later offers queue.
      const inFlight = frame(0, 300 * 1024)
      offer(outbox, inFlight, 0)
      yield* deliver(outbox)
      offer(outbox, "\"queued 1\"", 0)
      offer(outbox, "\"queued 2\"", 0)
      const writer = yield* runWriter(outbox)
      assert.isUndefined(writer.pollUnsafe())
      assert.strictEqual(ledger.bytes, inFlight.length + cost("\"queued 1\"") + cost("\"queued 2\""))

      assert.strictEqual(outbox.stop("closing"), 2)
      assert.strictEqual(outbox.stop("closing"), 0)
      assert.strictEqual(ledger.bytes, inFlight.length) // still unflushed in the socket
      assert.deepStrictEqual(offer(outbox, "x", 0), { _tag: "Refused", reason: "closing", frames: 1 })

      yield* conn.close(CloseCodes.Reclaimed) // an eviction closes the socket at once
      yield* Fiber.join(writer)
      assert.deepStrictEqual(conn.sent, [inFlight])
      assert.deepStrictEqual(conn.closedWith(), CloseCodes.Reclaimed)
      assert.strictEqual(outbox.usedBytes(), 0)
      assert.strictEqual(ledger.bytes, 0)
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 0)
    })))

  it.effect("an idle outbox's writer ends at once; stop then drops nothing and closes nothing", () =>
    isolated(Effect.gen(function*() {
      const { conn, outbox } = yield* setup()
      yield* Fiber.join(yield* runWriter(outbox))
      assert.strictEqual(outbox.stop("closing"), 0)
      assert.strictEqual(conn.closeCalls.length, 0)
    })))
})
