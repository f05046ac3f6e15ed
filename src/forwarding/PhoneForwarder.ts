/**
 * The phone forwarder (SPEC §4.1): one per phone, one sink. Reads the phone's messages in the
 * batches they arrived in, validates and wraps each (pure), and writes them to the binary that
 * holds the server-id at that moment. `phone_to_binary` is counted on the success path of the
 * write only; any typed failure (no binary, invalid JSON, binary write refused) ends the stream,
 * and with it the phone's session.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Stream from "effect/Stream"
import { type BufferLedger, fits } from "../connection/BufferLedger.ts"
import { isJson, wrap } from "../domain/Envelope.ts"
import { BinaryWriteFailed, InvalidJson, NoBinary } from "../domain/Errors.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { PhoneHandle } from "../registry/Handles.ts"
import type { RegistryShape } from "../registry/Registry.ts"

export type PhoneForwardError = InvalidJson | NoBinary | BinaryWriteFailed

export interface PhoneForwarderDeps {
  readonly registry: RegistryShape
  readonly ledger: BufferLedger
  /** Unflushed bytes a binary connection may hold (SPEC §4.4). */
  readonly binaryBudget: number
}

const countForwarded = (frames: number, bytes: number) =>
  Effect.andThen(
    Metric.update(Metrics.framesForwardedPhoneToBinary, frames),
    Metric.update(Metrics.bytesForwardedPhoneToBinary, bytes)
  )

/** Writes envelopes to the binary holding the server-id now, as one ordered batch. */
const writeToBinary = (
  phone: PhoneHandle,
  envelopes: ReadonlyArray<string>,
  deps: PhoneForwarderDeps
): Effect.Effect<void, NoBinary | BinaryWriteFailed> =>
  Effect.suspend((): Effect.Effect<void, NoBinary | BinaryWriteFailed> => {
    const binary = deps.registry.binaryFor(phone.serverId)
    // Only the binary that served this phone, while the phone is still registered and that binary's
    // socket is open: an evicted phone (reclaim, takeover) must never reach the new holder, whose
    // daemon never saw its conn_id (SPEC §3.4); a binary already closing is as good as gone.
    if (
      binary === undefined || binary !== phone.servedBy || !binary.conn.isOpen() ||
      deps.registry.phoneFor(phone.serverId, phone.connId) !== phone
    ) return Effect.fail(new NoBinary({ frames: envelopes.length }))
    let bytes = 0
    for (const envelope of envelopes) bytes += Buffer.byteLength(envelope)
    if (
      binary.conn.pendingBytes() + bytes > deps.binaryBudget ||
      !fits(deps.ledger, bytes) ||
      !binary.conn.send(envelopes)
    ) return Effect.fail(new BinaryWriteFailed({ frames: envelopes.length }))
    return countForwarded(envelopes.length, bytes)
  })

/** Forwards one read batch: the valid prefix is written (and counted), then the first failure ends it. */
const forwardBatch = (
  phone: PhoneHandle,
  batch: ReadonlyArray<string>,
  deps: PhoneForwarderDeps
): Effect.Effect<void, PhoneForwardError> =>
  Effect.suspend(() => {
    const envelopes: Array<string> = []
    let invalidAt = -1
    for (let i = 0; i < batch.length; i++) {
      const text = batch[i]!
      if (!isJson(text)) {
        invalidAt = i
        break
      }
      envelopes.push(wrap(phone.envelopePrefix, text))
    }
    const written = envelopes.length === 0 ? Effect.void : writeToBinary(phone, envelopes, deps)
    return invalidAt === -1
      ? written
      : Effect.andThen(written, Effect.fail(new InvalidJson({ frames: batch.length - invalidAt })))
  })

/** Runs until the phone's messages end (normal) or a typed failure ends the session. */
export const forwardPhone = (phone: PhoneHandle, deps: PhoneForwarderDeps): Effect.Effect<void, PhoneForwardError> =>
  Stream.runForEachArray(phone.conn.messages, (batch) => forwardBatch(phone, batch, deps))
