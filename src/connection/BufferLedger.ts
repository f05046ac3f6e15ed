import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { RelayConfig } from "../config/RelayConfig.ts"
import type { LogFields } from "../observability/Log.ts"
import type { PeerConnection } from "./PeerConnection.ts"
/**
 * Relay-wide count of outbound bytes held in memory: phone outbox items not yet handed to a
 * socket, plus every socket's unflushed bytes (SPEC §7.4). One mutable number, shared by every
 * connection and outbox; the event loop is the only writer, so no lock is needed.
 *
 * The ledger also knows who holds those bytes (`holders`, one per connection that may hold
 * any), so that when the bound is reached the largest backlogs can be shed first (`makeRoom`).
 * The common path stays one add and one compare (`fits`); the holders are consulted only when an
 * enqueue does not fit.
 */
export interface BufferLedger {
  bytes: number
  readonly max: number
  /**
   * Every tracked connection's share of `bytes`, by connection: sessions add them (`track`), and
   * a connection leaves once its socket is gone (it holds nothing then), or when it is shed.
   */
  readonly holders: Map<PeerConnection, Holder>
}

/** One connection's share of the ledger: a phone (its outbox and socket) or a binary (its socket). */
export interface Holder {
  /** Bytes this connection has counted in the ledger right now. */
  readonly heldBytes: () => number
  /**
   * Closes the connection as overflowing and gives up everything it holds: every byte is
   * released from the ledger before this returns. Returns the frames it dropped that are not
   * counted anywhere yet (the caller counts them as `backlog_full`).
   */
  readonly shed: () => number
  /** Who it is, for the log line of the shed. */
  readonly fields: LogFields
}

/** A holder that was shed to make room. */
export interface Shed {
  readonly frames: number
  readonly fields: LogFields
}

export interface Room {
  /** Whether the bytes asked for fit now. */
  readonly fits: boolean
  /** The holders shed on the way, largest first (possibly some even when `fits` is false). */
  readonly shed: ReadonlyArray<Shed>
}

export const makeBufferLedger = (max: number): BufferLedger => ({ bytes: 0, max, holders: new Map() })

/** Whether `cost` more bytes fit under the relay-wide budget. */
export const fits = (ledger: BufferLedger, cost: number): boolean => ledger.bytes + cost <= ledger.max

/**
 * Called when `cost` more bytes for `enqueuer` do not fit (`fits`): sheds the holders with the largest
 * backlogs, one at a time, until the bytes fit (SPEC §7.4). When nobody holds more than the
 * enqueuer would with these bytes, nothing more is shed and `fits` is false: the enqueuer is the
 * one that overflows (it also loses ties: shedding a peer to let the asker grow past it would not
 * be fairer). A healthy peer, whose backlog stays small, is therefore never the one closed while
 * a peer that stopped reading holds more.
 *
 * Linear in the number of tracked connections, and only on this slow path: each pass either
 * sheds a connection (which leaves the map) or ends.
 */
export const makeRoom = (ledger: BufferLedger, cost: number, enqueuer: PeerConnection): Room => {
  const shed: Array<Shed> = []
  const own = ledger.holders.get(enqueuer)
  while (ledger.bytes + cost > ledger.max) {
    const ownBytes = (own === undefined ? 0 : own.heldBytes()) + cost
    let largest: PeerConnection | undefined
    let largestBytes = ownBytes
    for (const [conn, holder] of ledger.holders) {
      if (conn === enqueuer) continue
      const held = holder.heldBytes()
      if (held > largestBytes) {
        largest = conn
        largestBytes = held
      }
    }
    if (largest === undefined) return { fits: false, shed }
    const victim = ledger.holders.get(largest)!
    ledger.holders.delete(largest)
    shed.push({ frames: victim.shed(), fields: victim.fields })
  }
  return { fits: true, shed }
}

/**
 * Tracks `holder` as `conn`'s share of the ledger until the connection is gone (`untrack`, called
 * by the connection itself): no finalizer per connection. A connection that is already gone is
 * not added, so nothing is left behind.
 */
export const track = (ledger: BufferLedger, conn: PeerConnection, holder: Holder): void => {
  if (conn.isOpen()) ledger.holders.set(conn, holder)
}

/** The connection is gone: it holds nothing any more. */
export const untrack = (ledger: BufferLedger, conn: PeerConnection): void => {
  ledger.holders.delete(conn)
}

/** The relay-wide ledger as a service, so every connection and outbox of one relay shares it. */
export class Ledger extends Context.Service<Ledger, BufferLedger>()("pyrycode-relay/Ledger") {
  static readonly layer = Layer.effect(Ledger, Effect.map(RelayConfig, (c) => makeBufferLedger(c.maxBufferedBytes)))
}
