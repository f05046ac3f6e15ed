/**
 * The outbox of one phone (SPEC §4.3): a bounded FIFO of frames waiting to be written. The binary
 * forwarder writes it through at the end of each routing pass while the socket has room; only
 * when something must wait (backpressure above the high-water mark, a directive that closes after
 * its flush, a failed write) does a writer fiber run, forked into the phone's scope, and it ends
 * once nothing is left to wait for — an idle phone has no writer. Enqueue never blocks. Each item
 * costs `frame bytes + 64` against the phone's budget and the relay-wide ledger; the batch being
 * written still counts until it is flushed.
 *
 * Frames arrive as views into the binary's reads (no copy on the way in). A frame written through
 * at the end of its routing pass is copied once, by the connection as it encodes the batch (a
 * large one may be written in place: `PeerConnection.send`); frames that must wait are first
 * copied out of their read at the end of that pass, so a waiting frame never pins the (possibly
 * much larger) read it came from: what the budget counts is what is held.
 *
 * State ownership: the queue (`frames`, its byte and cost sums, a pending directive), `used` and
 * the flags belong to this outbox; `offer` and `stop` are
 * synchronous so the binary forwarder can call them inside one batch without yielding.
 */
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { type BufferLedger, fits, type Holder, makeRoom, type Shed, track } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { PhoneWriteFailed } from "../domain/Errors.ts"
import type { LogFields } from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"

export const ITEM_OVERHEAD = 64
/** Frames this large are copied into a buffer of their own when they must wait (see `own`). */
const OWN_APART = 16 * 1024
/** Unflushed bytes the socket may hold before the writer waits for a flush (backpressure). */
const WRITE_HIGH_WATER = 256 * 1024

/** Why an outbox stopped accepting: decides how refused enqueues are counted. */
export type StopReason = "backlog_full" | "phone_write_failed" | "closing"

/**
 * `shed`: other connections shed to make room for this offer under the relay-wide budget (SPEC
 * §7.4), whichever way it ended; their dropped frames are the caller's to count and log.
 */
export type OfferResult =
  | { readonly _tag: "Accepted"; readonly shed: ReadonlyArray<Shed> }
  /** `frames`: 1 when the refused item carried a frame (a bare directive carries none). */
  | { readonly _tag: "Refused"; readonly reason: StopReason; readonly frames: 0 | 1 }
  /** This offer overflowed: the outbox stopped, `dropped` items (this one included) were dropped; close the phone with `close`. */
  | {
    readonly _tag: "Overflow"
    readonly dropped: number
    readonly close: CloseCodes.CloseCode
    readonly shed: ReadonlyArray<Shed>
  }

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

const NONE_SHED: ReadonlyArray<Shed> = []
const NO_FIELDS: LogFields = {}
const ACCEPTED: OfferResult = { _tag: "Accepted", shed: NONE_SHED }

/** An outbox is its phone's share of the relay-wide ledger (`Holder`) once it is tracked. */
export interface Outbox extends Holder {
  /** `frame`: the frame's bytes (valid for the current routing pass: the outbox keeps a copy if it must wait). */
  readonly offer: (frame: Buffer | undefined, closeCode: number) => OfferResult
  /**
   * Writes the queue through at once when no writer runs and the socket has room; `context` is
   * the caller's (its metric registry counts what is flushed). `true` when something is left
   * for the writer (`startWriter`).
   */
  readonly flush: (context: Context.Context<never>) => boolean
  /** Forks the writer into the phone's scope unless one runs already. */
  readonly startWriter: Effect.Effect<void>
  /** Stops accepting and drops everything pending (closes from outside act at once). Returns the number dropped. */
  readonly stop: (reason: StopReason) => number
  /**
   * The writer: writes what is queued, waiting out backpressure, until nothing is left, the
   * outbox stops, a directive closed the phone, or a write failed. A second concurrent run returns at once.
   */
  readonly run: Effect.Effect<void>
  /** Bytes counted against this phone's budget (queued + in flight). */
  readonly usedBytes: () => number
  /** Whether the forked writer died with a defect (it closed the phone 1011 `internal error`). */
  readonly writerDied: () => boolean
  /** Bytes this phone holds in the relay-wide ledger: queued items and its socket's unflushed bytes. */
  readonly heldBytes: () => number
  /**
   * Sheds the phone (SPEC §7.4): stops the outbox, drops what is queued and aborts the socket, so
   * every byte it held is released before this returns; closed `1011 phone backlog full` (or a
   * queued directive's code). Returns the queued frames dropped (the caller counts them);
   * frames in flight are counted here, as `backlog_full`, when the socket gives them up.
   */
  readonly shed: () => number
  /**
   * Tracks the outbox in the relay-wide ledger as the phone `fields` name, until its socket is
   * gone, so the phone can be shed — and can shed larger backlogs — when the budget is full.
   */
  readonly track: (fields: LogFields) => void
}

/**
 * A class so that its methods are shared: one outbox per phone, thousands at once. Fields are the
 * whole per-phone state.
 */
class PhoneOutbox implements Outbox {
  private readonly conn: PeerConnection
  private readonly budget: number
  private readonly ledger: BufferLedger
  /** Queued frames, in order: no object per frame (this is the hot path). */
  private frames: Array<Buffer> = []
  /** How many of the first queued frames are the outbox's own copies (the rest are views into reads). */
  private owned = 0
  /** Bytes of the queued frames. */
  private queuedBytes = 0
  /** Close code of a queued directive, 0 for none. It is always last: after it nothing is accepted. */
  private directive = 0
  private used = 0
  /** Cost of what is still queued (it holds ledger bytes until handed to the socket). */
  private queuedCost = 0
  /** Set once the outbox refuses new items (a directive was accepted, or it stopped). */
  private refusing: StopReason | undefined
  /** Set once the writer must end and nothing pending will be written. */
  private ended = false
  /** Set by a flush callback when the socket failed under a batch: the writer ends. */
  private failed = false
  /** Set once the phone is shed: frames the socket gives up then were dropped by the shed. */
  private shedding = false
  private writing = false
  private readonly scope: Scope.Scope
  /** Set when the forked writer died with a defect (its session reports it). */
  private died = false
  /** The context (metric registry) counting happens in; set by the first flush or writer. */
  private context: Context.Context<never> | undefined
  /** Who the phone is, for the log line if it is shed; set once it is tracked. */
  fields: LogFields = NO_FIELDS

  constructor(conn: PeerConnection, budget: number, ledger: BufferLedger, scope: Scope.Scope) {
    this.conn = conn
    this.budget = budget
    this.ledger = ledger
    this.scope = scope
  }

  stop(reason: StopReason): number {
    if (this.ended) return 0
    this.ended = true
    this.refusing ??= reason
    const dropped = this.frames.length
    this.frames = []
    this.owned = 0
    this.queuedBytes = 0
    this.directive = 0
    this.ledger.bytes -= this.queuedCost
    this.used -= this.queuedCost
    this.queuedCost = 0
    return dropped
  }

  offer(frame: Buffer | undefined, closeCode: number): OfferResult {
    if (this.refusing !== undefined) return { _tag: "Refused", reason: this.refusing, frames: frame === undefined ? 0 : 1 }
    const bytes = frame === undefined ? 0 : frame.length
    const cost = bytes + ITEM_OVERHEAD
    let shed = NONE_SHED
    if (this.used + cost > this.budget) return this.overflow(frame, closeCode, shed)
    if (!fits(this.ledger, cost)) {
      // The relay-wide budget is full: the largest backlogs are shed first, this phone only if
      // it holds the largest itself (SPEC §7.4).
      const room = makeRoom(this.ledger, cost, this.conn)
      shed = room.shed
      if (!room.fits) return this.overflow(frame, closeCode, shed)
    }
    this.used += cost
    this.queuedCost += cost
    this.ledger.bytes += cost
    if (frame !== undefined) {
      this.frames.push(frame)
      this.queuedBytes += bytes
    }
    // A directive stops the outbox: later frames to this phone are refused (SPEC §2.3).
    if (closeCode !== 0) {
      this.directive = closeCode
      this.refusing = "closing"
    }
    return shed === NONE_SHED ? ACCEPTED : { _tag: "Accepted", shed }
  }

  private overflow(frame: Buffer | undefined, closeCode: number, shed: ReadonlyArray<Shed>): OfferResult {
    const dropped = this.stop("backlog_full") + (frame === undefined ? 0 : 1)
    return {
      _tag: "Overflow",
      dropped,
      close: closeCode === 0 ? CloseCodes.PhoneBacklogFull : { code: closeCode, reason: "" },
      shed
    }
  }

  heldBytes(): number {
    return this.queuedCost + this.conn.pendingBytes()
  }

  track(fields: LogFields): void {
    this.fields = fields
    track(this.ledger, this.conn, this)
  }

  shed(): number {
    const directive = this.directive
    this.shedding = true
    const dropped = this.stop("backlog_full")
    this.conn.abort(directive === 0 ? CloseCodes.PhoneBacklogFull : { code: directive, reason: "" })
    return dropped
  }

  /**
   * Writes through what is queued, in order, right now — if no writer runs, the socket has room
   * and no directive is queued (a directive must wait for its flush: the writer's job). The
   * binary forwarder calls it once per phone after a routing pass, so a batch of frames for one
   * phone leaves as one write. Frames left queued are copied out of the reads they came from.
   */
  flush(context: Context.Context<never>): boolean {
    this.context ??= context
    if (this.writing) {
      this.own()
      return false
    }
    if (this.failed) return true
    if (!this.hasQueued()) return false
    if (this.conn.pendingBytes() > WRITE_HIGH_WATER || this.directive !== 0) {
      this.own()
      return true
    }
    this.writeQueued()
    return this.failed
  }

  /**
   * Copies the queued frames that are still views into the binary's reads out of them: a frame
   * that waits must not keep a whole read (other phones' frames, or one large message) alive.
   * Small frames share one buffer; a large one gets an exact buffer of its own, so the
   * connection can write it in place later instead of copying it again.
   */
  private own(): void {
    const frames = this.frames
    if (this.owned === frames.length) return
    let bytes = 0
    for (let i = this.owned; i < frames.length; i++) if (frames[i]!.length < OWN_APART) bytes += frames[i]!.length
    const shared = bytes > 0 ? Buffer.allocUnsafeSlow(bytes) : undefined
    let at = 0
    for (let i = this.owned; i < frames.length; i++) {
      const frame = frames[i]!
      if (shared === undefined || frame.length >= OWN_APART) {
        frames[i] = Buffer.from(frame)
        continue
      }
      shared.set(frame, at)
      frames[i] = shared.subarray(at, at + frame.length)
      at += frame.length
    }
    this.owned = frames.length
  }

  get startWriter(): Effect.Effect<void> {
    return Effect.suspend(() => (this.writing ? Effect.void : Effect.asVoid(Effect.forkIn(this.supervisedRun, this.scope))))
  }

  /**
   * The forked writer. Nothing waits on it, so a defect must end the phone here or nobody would:
   * what is pending is dropped (counted) and the phone closed 1011 `internal error`; its forwarder
   * then sees the socket close and the session ends as on any disconnect (and reports it).
   */
  private get supervisedRun(): Effect.Effect<void> {
    return Effect.catchDefect(this.run, () =>
      Effect.suspend(() => {
        this.died = true
        this.dropAll()
        return this.conn.close(CloseCodes.InternalError)
      }))
  }

  writerDied(): boolean {
    return this.died
  }

  usedBytes(): number {
    return this.used
  }

  private hasQueued(): boolean {
    return this.frames.length > 0 || this.directive !== 0
  }

  /**
   * Waits until what is queued may be written: `true` then, `false` once nothing is left or the
   * outbox ended. Backpressure: the socket takes more only below the high-water mark; until then
   * the frames stay queued (a stop can still drop them); a failed flush sets `failed`.
   */
  private readonly ready: Effect.Effect<boolean> = Effect.suspend(() => {
    if (this.ended || this.failed || !this.hasQueued()) return Effect.succeed(false)
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
      const released: Released = ok ? "written" : this.shedding ? "shed" : "write_failed"
      if (this.context !== undefined) count(released, frames, bytes, this.context)
      if (ok) return
      this.failed = true
      // The socket failed: whatever is still queued will never be written.
      if (!this.writing) this.dropAll()
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
      this.failed = true
    }
    return directive
  }

  /** The writer's loop: one generator function for every outbox (a `function*` per call costs a prototype each). */
  private static readonly loop = Effect.fnUntraced(function*(outbox: PhoneOutbox) {
    for (;;) {
      const ready = yield* outbox.ready
      if (outbox.failed) return yield* new PhoneWriteFailed()
      if (!ready) return
      const directive = outbox.writeQueued()
      if (outbox.failed) return yield* new PhoneWriteFailed()
      if (directive !== 0) {
        // The directive closes after everything queued before it is written.
        if ((yield* Effect.exit(outbox.conn.flushed))._tag === "Failure" || outbox.failed) {
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

  get run(): Effect.Effect<void> {
    return Effect.contextWith((services: Context.Context<never>) => {
      if (this.writing) return Effect.void
      this.writing = true
      this.context ??= services
      return Effect.ensuring(
        Effect.catchTag(PhoneOutbox.loop(this), "PhoneWriteFailed", () =>
          Effect.suspend(() => {
            this.dropAll()
            return this.conn.close(CloseCodes.PhoneWriteFailed)
          })),
        Effect.sync(() => {
          this.writing = false
        })
      )
    })
  }
}

export const make = (options: {
  readonly conn: PeerConnection
  readonly budget: number
  readonly ledger: BufferLedger
  /** The phone's scope: the writer runs in it, so it ends with the phone's session at the latest. */
  readonly scope: Scope.Scope
}): Outbox => new PhoneOutbox(options.conn, options.budget, options.ledger, options.scope)
