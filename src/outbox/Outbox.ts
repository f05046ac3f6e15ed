/**
 * The outbox of one phone (SPEC §4.3): a bounded FIFO of frames waiting to be written, and its
 * one writer. Enqueue never blocks; the binary forwarder writes the queue through at the end of
 * each routing pass, and a writer fiber runs only while something must wait. The queue and its
 * life (`OutboxQueue`: open → closing → stopped) and the writer (`PhoneOutbox`: idle → running)
 * are one object per phone.
 */
import type * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { BufferLedger, Holder } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import type { LogFields } from "../observability/Log.ts"
import type { OfferResult, StopReason } from "./OutboxQueue.ts"
import { PhoneOutbox } from "./PhoneOutbox.ts"

export { ITEM_OVERHEAD } from "./OutboxQueue.ts"
export type { OfferResult, StopReason } from "./OutboxQueue.ts"

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

export const make = (options: {
  readonly conn: PeerConnection
  readonly budget: number
  readonly ledger: BufferLedger
  /** The phone's scope: the writer runs in it, so it ends with the phone's session at the latest. */
  readonly scope: Scope.Scope
}): Outbox => new PhoneOutbox(options.conn, options.budget, options.ledger, options.scope)
