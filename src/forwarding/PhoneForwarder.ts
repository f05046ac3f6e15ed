/**
 * The phone forwarder (SPEC §4.1): one per phone, one sink. Reads the phone's messages in the
 * batches they arrived in, validates and wraps each (pure), and writes them to the binary that
 * holds the server-id at that moment. `phone_to_binary` is counted on the success path of the
 * write only; any typed failure (no binary, invalid JSON, binary write refused) ends the stream,
 * and with it the phone's session.
 */
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { type BufferLedger, fits, makeRoom } from "../connection/BufferLedger.ts"
import type { Frame, PeerConnection } from "../connection/PeerConnection.ts"
import { wrap } from "../domain/Envelope.ts"
import { isJson } from "../domain/JsonBytes.ts"
import { BinaryWriteFailed, InvalidJson, NoBinary } from "../domain/Errors.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { PhoneHandle } from "../registry/Handles.ts"
import type { RegistryShape } from "../registry/Registry.ts"
import { reportShed } from "./Shedding.ts"

export type PhoneForwardError = InvalidJson | NoBinary | BinaryWriteFailed

export interface PhoneForwarderDeps {
  readonly registry: RegistryShape
  readonly ledger: BufferLedger
  /** Unflushed bytes a binary connection may hold (SPEC §4.4). */
  readonly binaryBudget: number
}

/**
 * Writes envelopes to the binary that served this phone, as one ordered batch; counts on
 * success. A failure stands for the whole read batch (`batchFrames`): nothing of it is forwarded
 * and the session ends, so the failure counts every one of its frames, valid or not.
 */
const writeToBinary = (
  phone: PhoneHandle,
  envelopes: ReadonlyArray<Frame>,
  bytes: number,
  batchFrames: number,
  deps: PhoneForwarderDeps,
  context: Context.Context<never>
): Effect.Effect<void, NoBinary | BinaryWriteFailed> => {
  const binary = deps.registry.binaryFor(phone.serverId)
  // Only the binary that served this phone, while the phone is still registered and that binary's
  // socket is open: an evicted phone (reclaim, takeover) must never reach the new holder, whose
  // daemon never saw its conn_id (SPEC §3.4); a binary already closing is as good as gone.
  if (
    binary === undefined || binary !== phone.servedBy || !binary.conn.isOpen() ||
    deps.registry.phoneFor(phone.serverId, phone.connId) !== phone
  ) return Effect.fail(new NoBinary({ frames: batchFrames }))
  if (binary.conn.pendingBytes() + bytes > deps.binaryBudget) return Effect.fail(new BinaryWriteFailed({ frames: batchFrames }))
  if (!fits(deps.ledger, bytes)) {
    // The relay-wide budget is full: the largest backlogs are shed first; when the binary holds
    // the largest itself, this phone's frame is the one that cannot be delivered (SPEC §7.4, §4.4).
    const room = makeRoom(deps.ledger, bytes, binary.conn)
    const written: Effect.Effect<void, BinaryWriteFailed> = room.fits
      ? send(binary.conn, envelopes, bytes, batchFrames, context)
      : Effect.fail(new BinaryWriteFailed({ frames: batchFrames }))
    return room.shed.length === 0 ? written : Effect.andThen(reportShed(room.shed), written)
  }
  return send(binary.conn, envelopes, bytes, batchFrames, context)
}

const send = (
  conn: PeerConnection,
  envelopes: ReadonlyArray<Frame>,
  bytes: number,
  batchFrames: number,
  context: Context.Context<never>
): Effect.Effect<void, BinaryWriteFailed> => {
  if (!conn.send(envelopes)) return Effect.fail(new BinaryWriteFailed({ frames: batchFrames }))
  Metrics.framesForwardedPhoneToBinary.updateUnsafe(envelopes.length, context)
  Metrics.bytesForwardedPhoneToBinary.updateUnsafe(bytes, context)
  return Effect.void
}

/**
 * Forwards one read batch (pure up to the write): the valid prefix is written and counted, then
 * the first invalid message ends the stream.
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
  const written = envelopes.length === 0 ? Effect.void : writeToBinary(phone, envelopes, bytes, batch.length, deps, context)
  return invalidAt === -1
    ? written
    : Effect.andThen(written, Effect.fail(new InvalidJson({ frames: batch.length - invalidAt })))
}

/**
 * Runs until the phone's messages end (normal) or a typed failure ends the session. Counters are
 * updated through the forwarder's own context (its metric registry), synchronously per batch.
 */
export const forwardPhone = (phone: PhoneHandle, deps: PhoneForwarderDeps): Effect.Effect<void, PhoneForwardError> =>
  Effect.contextWith((context: Context.Context<never>) =>
    Stream.runForEachArray(phone.conn.messages, (batch) => forwardBatch(phone, batch, deps, context))
  )
