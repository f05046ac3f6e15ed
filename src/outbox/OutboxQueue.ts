/**
 * The queue half of a phone's outbox (SPEC §4.3): a bounded FIFO of frames and at most one close
 * directive, always last. `offer` never blocks: over the phone's budget the outbox overflows;
 * over the relay-wide budget the largest backlogs are shed first (SPEC §7.4). Each item costs
 * `frame bytes + ITEM_OVERHEAD` against the phone's budget and the relay-wide ledger; a batch
 * handed to the socket leaves the ledger (the connection counts its unflushed bytes from there)
 * but still counts against the phone's budget until it is flushed.
 *
 * State ownership: the queue, its sums and `phase` belong to this outbox; `offer`, `stop` and
 * `shed` are synchronous, so the binary forwarder calls them inside one routing pass.
 */
import { type BufferLedger, fits, type Holder, makeRoom, type Shed, track } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import type { LogFields } from "../observability/Log.ts"

export const ITEM_OVERHEAD = 64

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
 * Where the queue is in its life, one value at a time:
 *
 *   Open ── a directive is accepted ──► Closing ── written, phone closed ──► Stopped("closing")
 *    │                                     │
 *    └── overflow, shed, a failed write, a close from outside (`stop`) ─────► Stopped(reason)
 *
 * `Open` accepts offers. `Closing` refuses them as "closing" (the phone is leaving) while the
 * queue up to the directive is written. `Stopped` holds nothing and refuses everything: `reason`
 * says how a refused frame counts (a stop after a directive stays "closing"); `shed`, that the
 * phone was shed, so frames its socket gives up count `backlog_full`.
 */
export type Phase =
  | { readonly _tag: "Open" }
  | { readonly _tag: "Closing" }
  | { readonly _tag: "Stopped"; readonly reason: StopReason; readonly shed: boolean }

const OPEN: Phase = { _tag: "Open" }
const CLOSING: Phase = { _tag: "Closing" }
const NONE_SHED: ReadonlyArray<Shed> = []
const NO_FIELDS: LogFields = {}
const ACCEPTED: OfferResult = { _tag: "Accepted", shed: NONE_SHED }

/**
 * A class so that its methods are shared: one outbox per phone, thousands at once. Fields are the
 * whole per-phone state (the writer's half adds its own, `PhoneOutbox`).
 */
export abstract class OutboxQueue implements Holder {
  protected readonly conn: PeerConnection
  private readonly budget: number
  protected readonly ledger: BufferLedger
  protected phase: Phase = OPEN
  /** Queued frames, in order: no object per frame (this is the hot path). */
  protected frames: Array<Buffer> = []
  /** How many of the first queued frames are the outbox's own copies (the rest are views into reads). */
  protected owned = 0
  /** Bytes of the queued frames. */
  protected queuedBytes = 0
  /** Close code of the queued directive, 0 for none. It is always last: after it nothing is accepted. */
  protected directive = 0
  /** Cost of what is still queued (it holds ledger bytes until handed to the socket). */
  protected queuedCost = 0
  /** Cost counted against the phone's budget: queued, and handed to the socket but not flushed. */
  protected used = 0
  /** Who the phone is, for the log line if it is shed; set once it is tracked. */
  fields: LogFields = NO_FIELDS

  constructor(conn: PeerConnection, budget: number, ledger: BufferLedger) {
    this.conn = conn
    this.budget = budget
    this.ledger = ledger
  }

  offer(frame: Buffer | undefined, closeCode: number): OfferResult {
    const phase = this.phase
    if (phase._tag !== "Open") {
      return { _tag: "Refused", reason: phase._tag === "Closing" ? "closing" : phase.reason, frames: frame === undefined ? 0 : 1 }
    }
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
    // A directive stops the intake: later frames to this phone are refused (SPEC §2.3).
    if (closeCode !== 0) {
      this.directive = closeCode
      this.phase = CLOSING
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

  /** Stops accepting and drops everything queued (closes from outside act at once). Returns the number dropped. */
  stop(reason: StopReason): number {
    const phase = this.phase
    if (phase._tag === "Stopped") return 0
    this.phase = { _tag: "Stopped", reason: phase._tag === "Closing" ? "closing" : reason, shed: false }
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

  heldBytes(): number {
    return this.queuedCost + this.conn.pendingBytes()
  }

  usedBytes(): number {
    return this.used
  }

  track(fields: LogFields): void {
    this.fields = fields
    track(this.ledger, this.conn, this)
  }

  shed(): number {
    const directive = this.directive
    const dropped = this.stop("backlog_full")
    const phase = this.phase
    if (phase._tag === "Stopped" && !phase.shed) this.phase = { ...phase, shed: true }
    this.conn.abort(directive === 0 ? CloseCodes.PhoneBacklogFull : { code: directive, reason: "" })
    return dropped
  }

  protected hasQueued(): boolean {
    return this.frames.length > 0 || this.directive !== 0
  }
}
