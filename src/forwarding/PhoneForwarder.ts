/**
 * The phone forwarder (SPEC §4.1): one per phone, one sink. Reads the phone's messages in the
 * batches they arrived in, validates and wraps each (pure), and writes them to the binary that
 * holds the server-id at that moment, one write per batch.
 *
 * Typed outcomes decide counters: what became of a batch is a `PhoneBatchOutcome` — `Forwarded`,
 * or the typed error that ends the stream (and with it the phone's session) — and `countBatch` is
 * the one place it becomes a counter: `frames_forwarded` for `Forwarded`, `frames_dropped` under
 * the reason `DROP_REASON` gives each error tag. A new error without a reason does not compile.
 */
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { type BufferLedger, fits, makeRoom, type Shed } from "../connection/BufferLedger.ts"
import type { Frame } from "../connection/PeerConnection.ts"
import { wrap } from "../domain/Envelope.ts"
import { isJson } from "../domain/JsonBytes.ts"
import { BinaryWriteFailed, InvalidJson, NoBinary } from "../domain/Errors.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { BinaryHandle, PhoneHandle } from "../registry/Handles.ts"
import type { RegistryShape } from "../registry/Registry.ts"
import { reportShed } from "./Shedding.ts"

export type PhoneForwardError = InvalidJson | NoBinary | BinaryWriteFailed

/** A batch's envelopes, every one handed to the binary's socket in one write. */
export interface Forwarded {
  readonly _tag: "Forwarded"
  readonly frames: number
  /** Envelope bytes written. */
  readonly bytes: number
}

/**
 * Cluster mode: a batch handed to the plane for a binary on another node. That node counts its
 * frames once it writes them (CLUSTER.md §4), so nothing is counted here.
 */
export interface Relayed {
  readonly _tag: "Relayed"
}

const RELAYED: Relayed = { _tag: "Relayed" }

/** What became of (part of) one read batch: forwarded, or the typed error that ends the session. */
export type PhoneBatchOutcome = Forwarded | Relayed | PhoneForwardError

/** The drop reason of each error the forwarder can end with (SPEC §8.2). */
const DROP_REASON: { readonly [Tag in PhoneForwardError["_tag"]]: Metrics.DropReason } = {
  InvalidJson: "invalid_json",
  NoBinary: "no_binary",
  BinaryWriteFailed: "binary_write_failed"
}

/**
 * The one place a phone batch's outcome becomes a counter. Synchronous, once per outcome, through
 * the forwarder's own context (its metric registry): no effectful step per frame or per batch.
 */
export const countBatch = (outcome: PhoneBatchOutcome, context: Context.Context<never>): void => {
  if (outcome._tag === "Forwarded") {
    Metrics.framesForwardedPhoneToBinary.updateUnsafe(outcome.frames, context)
    Metrics.bytesForwardedPhoneToBinary.updateUnsafe(outcome.bytes, context)
    return
  }
  if (outcome._tag === "Relayed") return
  Metrics.framesDropped[DROP_REASON[outcome._tag]].updateUnsafe(outcome.frames, context)
}

export interface PhoneForwarderDeps {
  readonly registry: RegistryShape
  readonly ledger: BufferLedger
  /** Unflushed bytes a binary connection may hold (SPEC §4.4). */
  readonly binaryBudget: number
}

/**
 * The binary this phone's frames may go to now: only the one that served it, while the phone is
 * still registered and that binary's socket is open. An evicted phone (reclaim, takeover) must
 * never reach the new holder, whose daemon never saw its conn_id (SPEC §3.4); a binary already
 * closing is as good as gone.
 */
const servingBinary = (phone: PhoneHandle, registry: RegistryShape): BinaryHandle | undefined => {
  const binary = registry.binaryFor(phone.serverId)
  return binary !== undefined && binary === phone.servedBy && binary.conn.isOpen() &&
      registry.phoneFor(phone.serverId, phone.connId) === phone
    ? binary
    : undefined
}

const NONE_SHED: ReadonlyArray<Shed> = []

/**
 * Forwards one read batch: the valid prefix is wrapped (pure) and written as one write, then the
 * first invalid message, if any, ends the stream. A failed write stands for the whole batch
 * (`frames`: every frame of it, the invalid one included): nothing of it is forwarded.
 */
const forwardBatch = (
  phone: PhoneHandle,
  batch: ReadonlyArray<Buffer>,
  deps: PhoneForwarderDeps,
  context: Context.Context<never>
): Effect.Effect<void, PhoneForwardError> => {
  const envelopes: Array<Frame> = []
  let bytes = 0
  const prefix = phone.envelopePrefix
  let invalidAt = -1
  for (let i = 0; i < batch.length; i++) {
    const message = batch[i]!
    if (!isJson(message)) {
      invalidAt = i
      break
    }
    envelopes.push(wrap(prefix, message))
    bytes += prefix.length + message.length + 1
  }
  let shed = NONE_SHED
  let written: PhoneBatchOutcome | undefined
  if (envelopes.length > 0) {
    const binary = servingBinary(phone, deps.registry)
    if (binary === undefined) written = new NoBinary({ frames: batch.length })
    else if (binary.remote !== undefined) {
      // On another node: its node checks its own budget, and tells this one when it is full.
      written = binary.remote.relay(phone.connId, envelopes) ? RELAYED : new BinaryWriteFailed({ frames: batch.length })
    } else if (binary.conn.pendingBytes() + bytes > deps.binaryBudget) {
      written = new BinaryWriteFailed({ frames: batch.length })
    } else {
      let room = fits(deps.ledger, bytes)
      if (!room) {
        // The relay-wide budget is full: the largest backlogs are shed first; when the binary
        // holds the largest itself, this phone's batch is the one that cannot be delivered
        // (SPEC §7.4, §4.4).
        const made = makeRoom(deps.ledger, bytes, binary.conn)
        shed = made.shed
        room = made.fits
      }
      written = room && binary.conn.send(envelopes)
        ? { _tag: "Forwarded", frames: envelopes.length, bytes }
        : new BinaryWriteFailed({ frames: batch.length })
    }
    countBatch(written, context)
  }
  let ended: PhoneForwardError | undefined = written === undefined || written._tag === "Forwarded" || written._tag === "Relayed"
    ? undefined
    : written
  if (ended === undefined && invalidAt !== -1) {
    ended = new InvalidJson({ frames: batch.length - invalidAt })
    countBatch(ended, context)
  }
  const result = ended === undefined ? Effect.void : Effect.fail(ended)
  return shed.length === 0 ? result : Effect.andThen(reportShed(shed), result)
}

/**
 * Runs until the phone's messages end (normal) or a typed failure ends the session; the failure
 * is already counted (`countBatch`), its close code is the session's to choose.
 */
export const forwardPhone = (phone: PhoneHandle, deps: PhoneForwarderDeps): Effect.Effect<void, PhoneForwardError> =>
  Effect.contextWith((context: Context.Context<never>) =>
    Stream.runForEachArray(phone.conn.messages, (batch) => forwardBatch(phone, batch, deps, context))
  )
