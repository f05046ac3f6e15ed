/**
 * The writer half of a phone's outbox (SPEC §4.3). The binary forwarder writes the queue through
 * at the end of each routing pass while the socket has room (`flush`); only when something must
 * wait — backpressure above the high-water mark, a directive that closes after its flush, a failed
 * write — does a writer fiber run, forked into the phone's scope, and it ends once nothing is left
 * to wait for: an idle phone has no writer.
 *
 * Frames arrive as views into the binary's reads (no copy on the way in). A frame written through
 * at the end of its routing pass is copied once, by the connection as it encodes the batch (a
 * large one may be written in place: `PeerConnection.send`); frames that must wait are first
 * copied out of their read at the end of that pass (`ownFrames`).
 *
 * State ownership: `writer` and `writeFailed` belong to this outbox, beside the queue's state
 * (`OutboxQueue`); the flush callbacks run on the event loop like everything else here.
 */
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { BufferLedger } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { PhoneWriteFailed } from "../domain/Errors.ts"
import * as Metrics from "../observability/Metrics.ts"
import { OutboxQueue } from "./OutboxQueue.ts"
import { ownFrames } from "./OwnFrames.ts"

/** Unflushed bytes the socket may hold before the writer waits for a flush (backpressure). */
const WRITE_HIGH_WATER = 256 * 1024

/**
 * The writer's life: `idle` (no fiber), `running` (forked into the phone's scope while something
 * must wait; a second start is a no-op), `died` (it died with a defect, dropped what was pending
 * and closed the phone 1011 `internal error`; the phone's session reports it). Final once `died`.
 */
type Writer = "idle" | "running" | "died"

/**
 * What became of frames the outbox let go of: a batch its socket flushed (`written`), or frames
 * that will never be written — a batch the socket failed under or refused, or what was queued
 * when it failed (`write_failed`), a batch the socket gave up because the phone was shed (`shed`).
 */
type Released = "written" | "write_failed" | "shed"

/**
 * The one place the outbox's frames become counters (SPEC §4.3, §8.2): `binary_to_phone` once
 * per frame actually written, every other frame dropped under its reason. Synchronous, once per
 * batch, in the context (metric registry) counting happens in.
 */
const count = (released: Released, frames: number, bytes: number, context: Context.Context<never>): void => {
  switch (released) {
    case "written":
      Metrics.framesForwardedBinaryToPhone.updateUnsafe(frames, context)
      Metrics.bytesForwardedBinaryToPhone.updateUnsafe(bytes, context)
      return
    case "write_failed":
      Metrics.framesDropped.phone_write_failed.updateUnsafe(frames, context)
      return
    case "shed":
      Metrics.framesDropped.backlog_full.updateUnsafe(frames, context)
      return
    default:
      released satisfies never
  }
}

export class PhoneOutbox extends OutboxQueue {
  private readonly scope: Scope.Scope
  private writer: Writer = "idle"
  /**
   * A write failed (the socket gave up a batch, or refused one): the writer ends — or is started
   * for it — by dropping what is pending and closing the phone 1011 `phone write failed`.
   */
  private writeFailed = false
  /** The context (metric registry) counting happens in; set by the first flush or writer. */
  private context: Context.Context<never> | undefined

  constructor(conn: PeerConnection, budget: number, ledger: BufferLedger, scope: Scope.Scope) {
    super(conn, budget, ledger)
    this.scope = scope
  }

  /**
   * Writes through what is queued, in order, right now — if no writer runs, the socket has room
   * and no directive is queued (a directive must wait for its flush: the writer's job). The
   * binary forwarder calls it once per phone after a routing pass, so a batch of frames for one
   * phone leaves as one write. Frames left queued are copied out of the reads they came from.
   * `true` when something is left for the writer (`startWriter`).
   */
  flush(context: Context.Context<never>): boolean {
    this.context ??= context
    if (this.writer === "running") {
      this.own()
      return false
    }
    if (this.writeFailed) return true
    if (!this.hasQueued()) return false
    if (this.conn.pendingBytes() > WRITE_HIGH_WATER || this.directive !== 0) {
      this.own()
      return true
    }
    this.writeQueued()
    return this.writeFailed
  }

  private own(): void {
    if (this.owned === this.frames.length) return
    ownFrames(this.frames, this.owned)
    this.owned = this.frames.length
  }

  get startWriter(): Effect.Effect<void> {
    return Effect.suspend(() =>
      this.writer === "idle" ? Effect.asVoid(Effect.forkIn(this.supervisedRun, this.scope)) : Effect.void
    )
  }

  /**
   * The forked writer. Nothing waits on it, so a defect must end the phone here or nobody would:
   * what is pending is dropped (counted) and the phone closed 1011 `internal error`; its forwarder
   * then sees the socket close and the session ends as on any disconnect (and reports it).
   */
  private get supervisedRun(): Effect.Effect<void> {
    return Effect.catchDefect(this.run, () =>
      Effect.suspend(() => {
        this.writer = "died"
        this.dropAll()
        return this.conn.close(CloseCodes.InternalError)
      }))
  }

  writerDied(): boolean {
    return this.writer === "died"
  }

  /**
   * Waits until what is queued may be written: `true` then, `false` once nothing is left or the
   * outbox stopped. Backpressure: the socket takes more only below the high-water mark; until then
   * the frames stay queued (a stop can still drop them); a failed flush sets `writeFailed`.
   */
  private readonly ready: Effect.Effect<boolean> = Effect.suspend(() => {
    if (this.phase._tag === "Stopped" || this.writeFailed || !this.hasQueued()) return Effect.succeed(false)
    if (this.conn.pendingBytes() > WRITE_HIGH_WATER) {
      return Effect.flatMap(Effect.exit(this.conn.flushed), () => this.ready)
    }
    return Effect.succeed(true)
  })

  /** Counting happens when the socket reports a batch flushed: once per frame actually written. */
  private onBatchFlushed(frames: number, bytes: number, cost: number): (ok: boolean) => void {
    return (ok) => {
      this.used -= cost
      // Frames the socket never flushed are dropped, whoever closed it.
      const phase = this.phase
      const released: Released = ok ? "written" : phase._tag === "Stopped" && phase.shed ? "shed" : "write_failed"
      if (this.context !== undefined) count(released, frames, bytes, this.context)
      if (ok) return
      this.writeFailed = true
      // The socket failed: whatever is still queued will never be written.
      if (this.writer !== "running") this.dropAll()
    }
  }

  /**
   * Hands everything queued to the socket as one batch and returns the directive's close code, 0
   * for none. The writer does not wait for the flush unless the socket holds more than
   * `WRITE_HIGH_WATER` unflushed bytes, so batches pipeline.
   */
  private writeQueued(): number {
    const queued = this.frames
    const bytes = this.queuedBytes
    const cost = this.queuedCost
    const directive = this.directive
    this.frames = []
    this.owned = 0
    this.queuedBytes = 0
    this.queuedCost = 0
    this.directive = 0
    // Handed to the socket: from here its unflushed bytes are counted by the connection.
    this.ledger.bytes -= cost
    const frames = queued.length
    if (frames === 0) {
      this.used -= cost
      return directive
    }
    // The connection copies small frames as it encodes the batch; a large one it may write in
    // place, which pins at most twice its size (`PeerConnection.send`).
    if (!this.conn.send(queued, this.onBatchFlushed(frames, bytes, cost))) {
      this.used -= cost
      if (this.context !== undefined) count("write_failed", frames, bytes, this.context)
      this.writeFailed = true
    }
    return directive
  }

  /** The writer's loop: one generator function for every outbox (a `function*` per call costs a prototype each). */
  private static readonly loop = Effect.fnUntraced(function*(outbox: PhoneOutbox) {
    for (;;) {
      const ready = yield* outbox.ready
      if (outbox.writeFailed) return yield* new PhoneWriteFailed()
      if (!ready) return
      const directive = outbox.writeQueued()
      if (outbox.writeFailed) return yield* new PhoneWriteFailed()
      if (directive !== 0) {
        // The directive closes after everything queued before it is written.
        if ((yield* Effect.exit(outbox.conn.flushed))._tag === "Failure" || outbox.writeFailed) {
          return yield* new PhoneWriteFailed()
        }
        outbox.stop("closing")
        return yield* outbox.conn.close({ code: directive, reason: "" })
      }
    }
  })

  /** Stops the outbox for a failed write and counts what it dropped. */
  private dropAll(): number {
    const dropped = this.stop("phone_write_failed")
    if (dropped > 0 && this.context !== undefined) count("write_failed", dropped, 0, this.context)
    return dropped
  }

  /**
   * The writer: writes what is queued, waiting out backpressure, until nothing is left, the
   * outbox stops, a directive closed the phone, or a write failed. A second concurrent run
   * returns at once, and so does any run once the writer died.
   */
  get run(): Effect.Effect<void> {
    return Effect.contextWith((services: Context.Context<never>) => {
      if (this.writer !== "idle") return Effect.void
      this.writer = "running"
      this.context ??= services
      return Effect.ensuring(
        Effect.catchTag(PhoneOutbox.loop(this), "PhoneWriteFailed", () =>
          Effect.suspend(() => {
            this.dropAll()
            return this.conn.close(CloseCodes.PhoneWriteFailed)
          })),
        Effect.sync(() => {
          if (this.writer === "running") this.writer = "idle"
        })
      )
    })
  }
}
