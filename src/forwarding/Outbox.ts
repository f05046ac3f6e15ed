/**
 * The outbox of one phone (SPEC §4.3): a bounded FIFO of frames waiting to be written, drained
 * by one writer at a time: the offer itself while the socket has room and nothing is queued
 * (write-through), otherwise the writer fiber, which also waits out backpressure and closes after
 * a directive. Enqueue never blocks. Each item costs `frame bytes (UTF-8) + 64` against the phone's
 * budget and the relay-wide ledger; the batch being written still counts until it is flushed.
 *
 * State ownership: `queue`, `used` and `state` belong to this outbox; `offer` and `stop` are
 * synchronous so the binary forwarder can call them inside one batch without yielding.
 */
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { type BufferLedger, fits } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { PhoneWriteFailed } from "../domain/Errors.ts"
import * as Metrics from "../observability/Metrics.ts"

export const ITEM_OVERHEAD = 64
/** Unflushed bytes the socket may hold before the writer waits for a flush (backpressure). */
const WRITE_HIGH_WATER = 256 * 1024

interface Item {
  readonly frame: string | undefined
  /** 0 = not a directive; otherwise the wire close code to close with after `frame`. */
  readonly closeCode: number
  readonly cost: number
}

/** Why an outbox stopped accepting: decides how refused enqueues are counted. */
export type StopReason = "backlog_full" | "phone_write_failed" | "closing"

export type OfferResult =
  | { readonly _tag: "Accepted" }
  | { readonly _tag: "Refused"; readonly reason: StopReason }
  /** This offer overflowed: the outbox stopped, `dropped` items (this one included) were dropped; close the phone with `close`. */
  | { readonly _tag: "Overflow"; readonly dropped: number; readonly close: CloseCodes.CloseCode }

const ACCEPTED: OfferResult = { _tag: "Accepted" }

export interface Outbox {
  /** `frameBytes`: the frame's UTF-8 size, when the caller already knows it. */
  readonly offer: (frame: string | undefined, closeCode: number, frameBytes?: number) => OfferResult
  /** Writes the queue through at once when the writer is idle and the socket has room. */
  readonly flush: () => void
  /** Stops accepting and drops everything pending (closes from outside act at once). Returns the number dropped. */
  readonly stop: (reason: StopReason) => number
  /** The writer: runs until the outbox stops, a directive closes the phone, or a write fails. */
  readonly run: Effect.Effect<void>
  /** Bytes counted against this phone's budget (queued + in flight). */
  readonly usedBytes: () => number
}

export const make = (options: {
  readonly conn: PeerConnection
  readonly budget: number
  readonly ledger: BufferLedger
}): Outbox => {
  const { budget, conn, ledger } = options
  let queue: Array<Item> = []
  let used = 0
  /** Cost of items still in `queue` (they hold ledger bytes until handed to the socket). */
  let queuedCost = 0
  /** Set once the outbox refuses new items (a directive was accepted, or it stopped). */
  let refusing: StopReason | undefined
  /** Set once the writer must end and nothing pending will be written. */
  let ended = false
  let wakeWriter: (() => void) | undefined

  const wake = () => {
    const resume = wakeWriter
    wakeWriter = undefined
    resume?.()
  }
  /**
   * Offers wake the writer only once the current batch of offers is done (a microtask later):
   * resuming it inline would write the first frame alone and queue the rest behind its flush.
   */
  let wakeQueued = false
  const wakeSoon = () => {
    if (wakeQueued || wakeWriter === undefined) return
    wakeQueued = true
    queueMicrotask(() => {
      wakeQueued = false
      // `flush` may have written everything meanwhile: nothing to wake the writer for.
      if (queue.length > 0) wake()
    })
  }

  const stop = (reason: StopReason): number => {
    if (ended) return 0
    ended = true
    refusing ??= reason
    const dropped = queue.length
    queue = []
    ledger.bytes -= queuedCost
    used -= queuedCost
    queuedCost = 0
    wake()
    return dropped
  }

  const offer = (frame: string | undefined, closeCode: number, frameBytes?: number): OfferResult => {
    if (refusing !== undefined) return { _tag: "Refused", reason: refusing }
    const cost = (frameBytes ?? (frame === undefined ? 0 : Buffer.byteLength(frame))) + ITEM_OVERHEAD
    if (used + cost > budget || !fits(ledger, cost)) {
      const dropped = stop("backlog_full") + 1
      return {
        _tag: "Overflow",
        dropped,
        close: closeCode === 0 ? CloseCodes.PhoneBacklogFull : { code: closeCode, reason: "" }
      }
    }
    used += cost
    queuedCost += cost
    ledger.bytes += cost
    queue.push({ frame, closeCode, cost })
    // A directive stops the outbox: later frames to this phone are refused (SPEC §2.3).
    if (closeCode !== 0) refusing = "closing"
    wakeSoon()
    return ACCEPTED
  }

  /**
   * Writes through what is queued, in order, right now — if the writer is idle, the socket has
   * room and no directive is queued (a directive must wait for its flush: the writer's job).
   * The binary forwarder calls it once per phone after a routing pass, so a batch of frames for
   * one phone leaves as one write, without waking the writer fiber (an event-loop turn).
   */
  const flush = (): void => {
    if (queue.length === 0 || wakeWriter === undefined || failed || conn.pendingBytes() > WRITE_HIGH_WATER) return
    if (refusing === "closing") return
    const batch = queue
    queue = []
    writeBatch(batch)
    if (failed) wake()
  }

  /** The next batch: everything queued, in FIFO order; `undefined` once ended or a write failed. */
  const take: Effect.Effect<Array<Item> | undefined> = Effect.suspend(() => {
    if (ended || failed) return Effect.succeed(undefined)
    if (queue.length > 0) {
      // Backpressure: the socket takes more only below the high-water mark. Until then the items
      // stay queued (a stop can still drop them); a failed flush sets `failed`.
      if (conn.pendingBytes() > WRITE_HIGH_WATER) return Effect.flatMap(Effect.exit(conn.flushed), () => take)
      const batch = queue
      queue = []
      return Effect.succeed(batch)
    }
    return Effect.flatMap(Effect.callback<void>((resume) => {
      wakeWriter = () => resume(Effect.void)
      return Effect.sync(() => {
        wakeWriter = undefined
      })
    }), () => take)
  })

  /**
   * Counting happens when the socket reports a batch flushed — once per frame actually written,
   * never on enqueue — through the writer's own context (its metric registry).
   */
  let context: Context.Context<never> | undefined
  /** Set by a flush callback when the socket failed under a batch: the writer ends. */
  let failed = false
  const onBatchFlushed = (frames: number, bytes: number, cost: number) => (ok: boolean) => {
    used -= cost
    if (!ok) {
      // Frames the socket never flushed are dropped, whoever closed it.
      if (context !== undefined) Metrics.framesDropped.phone_write_failed.updateUnsafe(frames, context)
      if (!failed) {
        failed = true
        wake()
      }
      return
    }
    if (context !== undefined) {
      Metrics.framesForwardedBinaryToPhone.updateUnsafe(frames, context)
      Metrics.bytesForwardedBinaryToPhone.updateUnsafe(bytes, context)
    }
  }

  /**
   * Hands one batch to the socket (the batch array, the outbox's own, is emptied) and returns the
   * directive's close code, 0 for none. The writer does not wait for the flush unless the socket
   * holds more than `WRITE_HIGH_WATER` unflushed bytes, so batches pipeline.
   */
  const writeBatch = (items: Array<Item>): number => {
    const texts: Array<string> = []
    let cost = 0
    let bytes = 0
    let directive = 0
    for (const item of items) {
      if (item.frame !== undefined) {
        texts.push(item.frame)
        bytes += item.cost - ITEM_OVERHEAD
      }
      cost += item.cost
      if (item.closeCode !== 0) directive = item.closeCode
    }
    items.length = 0
    // Handed to the socket: from here its unflushed bytes are counted by the connection.
    queuedCost -= cost
    ledger.bytes -= cost
    const frames = texts.length
    if (frames === 0) {
      used -= cost
      return directive
    }
    if (!conn.send(texts, onBatchFlushed(frames, bytes, cost), bytes)) {
      used -= cost
      if (context !== undefined) Metrics.framesDropped.phone_write_failed.updateUnsafe(frames, context)
      failed = true
    }
    return directive
  }

  const loop: Effect.Effect<void, PhoneWriteFailed> = Effect.gen(function*() {
    for (;;) {
      const batch = yield* take
      if (failed) return yield* new PhoneWriteFailed()
      if (batch === undefined) return
      const directive = writeBatch(batch)
      if (failed) return yield* new PhoneWriteFailed()
      if (directive !== 0) {
        // The directive closes after everything queued before it is written.
        if ((yield* Effect.exit(conn.flushed))._tag === "Failure" || failed) return yield* new PhoneWriteFailed()
        stop("closing")
        return yield* conn.close({ code: directive, reason: "" })
      }
    }
  })

  const run: Effect.Effect<void> = Effect.contextWith((services: Context.Context<never>) => {
    context = services
    return Effect.catchTag(loop, "PhoneWriteFailed", () =>
      Effect.gen(function*() {
        const dropped = stop("phone_write_failed")
        yield* Metric.update(Metrics.framesDropped.phone_write_failed, dropped)
        yield* conn.close(CloseCodes.PhoneWriteFailed)
      }))
  })

  return { offer, flush, stop, run, usedBytes: () => used }
}
