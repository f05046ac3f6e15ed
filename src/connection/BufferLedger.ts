import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { RelayConfig } from "../config/RelayConfig.ts"
/**
 * Relay-wide count of outbound bytes held in memory: phone outbox items not yet handed to a
 * socket, plus every socket's unflushed bytes (SPEC §7.4). One mutable number, shared by every
 * connection and outbox; the event loop is the only writer, so no lock is needed.
 */
export interface BufferLedger {
  bytes: number
  readonly max: number
}

export const makeBufferLedger = (max: number): BufferLedger => ({ bytes: 0, max })

/** Whether `cost` more bytes fit under the relay-wide budget. */
export const fits = (ledger: BufferLedger, cost: number): boolean => ledger.bytes + cost <= ledger.max

/** The relay-wide ledger as a service, so every connection and outbox of one relay shares it. */
export class Ledger extends Context.Service<Ledger, BufferLedger>()("pyrycode-relay/Ledger") {
  static readonly layer = Layer.effect(Ledger, Effect.map(RelayConfig, (c) => makeBufferLedger(c.maxBufferedBytes)))
}
