/**
 * The outbox of one phone (SPEC §4.3): a bounded FIFO of frames waiting to be written, with one
 * writer fiber. Enqueue never blocks. Each item costs `frame bytes (UTF-8) + 64` against the phone's
 * budget and the relay-wide ledger; the batch being written still counts until it is flushed.
 *
 * State ownership: `queue`, `used` and `state` belong to this outbox; `offer` and `stop` are
 * synchronous so the binary forwarder can call them inside one batch without yielding.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { type BufferLedger, fits } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { PhoneWriteFailed } from "../domain/Errors.ts"
import * as Metrics from "../observability/Metrics.ts"

export const ITEM_OVERHEAD = 64

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
  readonly offer: (frame: string | undefined, closeCode: number) => OfferResult
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
  /** Frames of the batch being written, so a failed write counts them as dropped. */
  let inFlightFrames = 0

  const wake = () => {
    const resume = wakeWriter
    wakeWriter = undefined
    resume?.()
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

  const offer = (frame: string | undefined, closeCode: number): OfferResult => {
    if (refusing !== undefined) return { _tag: "Refused", reason: refusing }
    const cost = (frame === undefined ? 0 : Buffer.byteLength(frame)) + ITEM_OVERHEAD
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
    wake()
    return ACCEPTED
  }

  /** The next batch: everything queued, in FIFO order; `undefined` once the outbox ended. */
  const take: Effect.Effect<Array<Item> | undefined> = Effect.suspend(() => {
    if (ended) return Effect.succeed(undefined)
    if (queue.length > 0) {
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

  /** Writes one batch (the batch array is emptied: it is the outbox's own, taken whole). */
  const writeBatch = (items: Array<Item>) =>
    Effect.gen(function*() {
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
      inFlightFrames = frames
      if (frames > 0) {
        const accepted = conn.send(texts)
        // The socket now holds the encoded frames: drop our copies before waiting on the flush,
        // so a stalled phone costs its in-flight bytes once, not twice.
        texts.length = 0
        if (!accepted) {
          used -= cost
          return yield* new PhoneWriteFailed()
        }
        const flushed = yield* Effect.exit(conn.flushed)
        used -= cost
        if (flushed._tag === "Failure") return yield* new PhoneWriteFailed()
        inFlightFrames = 0
        yield* Metric.update(Metrics.framesForwardedBinaryToPhone, frames)
        yield* Metric.update(Metrics.bytesForwardedBinaryToPhone, bytes)
      } else {
        used -= cost
      }
      return directive
    })

  const loop: Effect.Effect<void, PhoneWriteFailed> = Effect.gen(function*() {
    for (;;) {
      const batch = yield* take
      if (batch === undefined) return
      const directive = yield* writeBatch(batch)
      if (directive !== 0) {
        stop("closing")
        return yield* conn.close({ code: directive, reason: "" })
      }
    }
  })

  const run: Effect.Effect<void> = Effect.catchTag(loop, "PhoneWriteFailed", () =>
    Effect.gen(function*() {
      const dropped = stop("phone_write_failed")
      yield* Metric.update(Metrics.framesDropped.phone_write_failed, dropped + inFlightFrames)
      yield* conn.close(CloseCodes.PhoneWriteFailed)
    }))

  return { offer, stop, run, usedBytes: () => used }
}
