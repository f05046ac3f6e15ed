/**
 * This node's side of the cluster registry: its `SlotTable` (the slots it holds — the cache the
 * hot path reads), the epoch of each of its claims, the per-server-id lock every transition
 * takes, and the one way a slot leaves this node when Redis says it is no longer its own.
 *
 * State ownership: `table` and `claims` belong here and change only under `lock` (or in a step no
 * other fiber can interleave with); `claims` has an entry exactly when `table` has a slot.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type { BufferLedger } from "../connection/BufferLedger.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { evict } from "../registry/Registry.ts"
import { SlotTable } from "../registry/SlotTable.ts"
import { type KeyedLock, makeKeyedLock } from "./KeyedLock.ts"
import type { OwnershipStore } from "./Ownership.ts"
import type { PlaneShape } from "./Plane.ts"
import { makeRemotePhones, type RemotePhones } from "./RemotePhones.ts"
import { makeRemoteSlots, type RemoteSlots } from "./RemoteSlots.ts"

/** This node's claim of a slot. */
export interface Claim {
  epoch: string
  /** `Clock` time the slot entered grace here; `undefined` while live. */
  graceSince: number | undefined
}

export interface NodeSlots {
  readonly table: SlotTable
  readonly claims: Map<string, Claim>
  readonly lock: KeyedLock
  readonly store: OwnershipStore
  readonly plane: PlaneShape
  /** Phones here whose binary is on another node (CLUSTER.md §2.2). */
  readonly remote: RemoteSlots
  /** Phones elsewhere of this node's claims. */
  readonly remotePhones: RemotePhones
  /** The connection gauges, from the table and this node's phones of other nodes' claims. */
  readonly publishCounts: Effect.Effect<void>
  /**
   * Redis says the slot is no longer this node's: drop it here, nothing counted. `lost` (another
   * claim holds it): its phones are closed as in a takeover (4404) and its binary, if still
   * connected, 1011 (CLUSTER.md §2.7). `expired` (its grace was expired, and counted, by another
   * node): its phones are closed 1000, as at any expiry.
   */
  readonly endHere: (serverId: string, how: "lost" | "expired") => Effect.Effect<void>
  /**
   * Set by the drain's `closeAll`. A claim or registration still waiting on Redis when the drain
   * began completes after it, so it is closed then, with the drain's code.
   */
  closing: CloseCodes.CloseCode | undefined
}

export const makeNodeSlots = (options: {
  readonly store: OwnershipStore
  readonly plane: PlaneShape
  readonly maxPhonesPerServer: number
  /** Unflushed bytes a binary connection may hold (SPEC §4.4). */
  readonly binaryBudget: number
  readonly ledger: BufferLedger
}): NodeSlots => {
  const { store, plane } = options
  const table = new SlotTable(options.maxPhonesPerServer)
  const claims = new Map<string, Claim>()
  const remote = makeRemoteSlots(plane, store.nodeId)
  const remotePhones = makeRemotePhones({ plane, table, claims, binaryBudget: options.binaryBudget, ledger: options.ledger })

  const publishCounts = Effect.suspend(() =>
    Effect.andThen(
      Metric.update(Metrics.connectedBinaries, table.liveBinaries()),
      Metric.update(Metrics.connectedPhones, table.phones() + remote.phoneCount())
    )
  )

  const endHere = (serverId: string, how: "lost" | "expired") =>
    Effect.suspend(() => {
      const dropped = table.drop(serverId)
      claims.delete(serverId)
      remotePhones.forget(serverId)
      if (dropped === undefined) return Effect.void
      return Effect.gen(function*() {
        yield* publishCounts
        yield* Effect.ignore(store.unindexClaim(serverId))
        if (how === "expired") return yield* evict(dropped.phones, CloseCodes.Normal, "grace_expired")
        yield* Effect.all([
          evict(dropped.phones, CloseCodes.Reclaimed, "evicted"),
          dropped.binary.conn.isOpen() ? dropped.binary.conn.close(CloseCodes.HeartbeatTimeout) : Effect.void
        ], { concurrency: "unbounded", discard: true })
        yield* Log.warn("claim lost", { server_id: serverId, binary_conn_id: dropped.binary.connId })
      })
    })

  return {
    table,
    claims,
    lock: makeKeyedLock(),
    store,
    plane,
    remote,
    remotePhones,
    publishCounts,
    endHere,
    closing: undefined
  }
}
