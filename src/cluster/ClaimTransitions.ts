/**
 * The transitions that give a binary its slot in cluster mode (SPEC §3.2–3.4, CLUSTER.md §2.1):
 * a fresh claim, the reclaim of a grace (this node's by its epoch, or any node's through the
 * `claim` script), and the takeover of an incumbent that failed its probe — here, or on another
 * node, probed through that node. Each runs its script first and changes this node's table only
 * on the script's answer, under the server-id's lock.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as CloseCodes from "../domain/CloseCodes.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { BinaryHandle } from "../registry/Handles.ts"
import { type ClaimResult, evict, type TakeoverResult } from "../registry/Registry.ts"
import type { CrossNode } from "./CrossNode.ts"
import type { NodeSlots } from "./NodeSlots.ts"
import type { RemotePhone } from "./Ownership.ts"
import type { PlaneShape } from "./Plane.ts"
import { type RemoteClaim, remoteIncumbent } from "./RemoteIncumbent.ts"

/** A claim this transition ended, with the phones Redis said it had on every node. */
interface Ended {
  readonly epoch: string
  readonly phones: ReadonlyArray<RemotePhone>
}

const GONE: ClaimResult = { _tag: "Gone" }
const HELD: ClaimResult = { _tag: "Held" }
const UNAVAILABLE: ClaimResult = { _tag: "Unavailable" }
const CLAIMED: ClaimResult = { _tag: "Claimed" }
const RECLAIMED: ClaimResult = { _tag: "Reclaimed" }

export const makeClaimTransitions = (
  slots: NodeSlots,
  options: {
    readonly crossNode: CrossNode
    /** The cross-node plane: probes through other nodes, word of claims taken over. */
    readonly plane: PlaneShape
    /** SPEC's `--probe-timeout`: how long another node's incumbent has to answer through its node. */
    readonly probeTimeout: Duration.Duration
  }
) => {
  const { table, claims, lock, store, publishCounts, remotePhones } = slots
  const { crossNode } = options
  const lose = (serverId: string) => slots.endHere(serverId, "lost")
  /** Incumbents on other nodes handed out by `claim`, for `takeover` to recognise. */
  const remotes = new WeakMap<BinaryHandle, RemoteClaim>()
  const fieldsOf = (binary: BinaryHandle) => ({
    server_id: binary.serverId,
    binary_conn_id: binary.connId,
    binary_version: binary.version
  })

  /**
   * Installs `binary` locally under `epoch` after Redis gave it the slot (a fresh claim, a
   * reclaim, or a takeover from a dead node), and counts that; `Gone` if it left meanwhile.
   * The claim it `ended` reaches its phones on every node (4404).
   */
  const install = (binary: BinaryHandle, epoch: string, counted: "claim" | "reclaim" | "takeover", ended?: Ended) =>
    Effect.suspend((): Effect.Effect<ClaimResult> => {
      remotePhones.forget(binary.serverId)
      const endedElsewhere = Effect.andThen(
        ended === undefined ? Effect.void : crossNode.announceEnd(binary.serverId, ended.epoch, ended.phones, "reclaimed"),
        // Phones here of an older claim of another node (its word lost): a newer claim holds it now.
        crossNode.endRemote(binary.serverId, undefined, "reclaimed")
      )
      const local = table.claim(binary)
      if (local._tag === "Gone") {
        // Redis holds a live claim of this node for a binary that left: end it at once.
        return Effect.as(Effect.andThen(endedElsewhere, Effect.ignore(store.expire(binary.serverId, epoch))), GONE)
      }
      claims.set(binary.serverId, { epoch, graceSince: undefined })
      const phones = local._tag === "Reclaimed" ? local.phones : []
      return Effect.gen(function*() {
        yield* endedElsewhere
        // The reaper's index (should this node die), and no longer a grace for the sweep.
        yield* Effect.ignore(store.indexClaim(binary.serverId))
        if (counted === "reclaim") yield* Effect.ignore(store.unindexGrace(binary.serverId))
        yield* publishCounts
        if (slots.closing !== undefined) yield* binary.conn.close(slots.closing)
        if (counted === "claim") {
          yield* Log.info("server claimed", fieldsOf(binary))
          return CLAIMED
        }
        if (counted === "takeover") {
          yield* Metric.update(Metrics.takeovers, 1)
          yield* Log.info("server takeover", fieldsOf(binary))
          return CLAIMED
        }
        yield* evict(phones, CloseCodes.Reclaimed, "evicted")
        yield* Metric.update(Metrics.graceReclaims, 1)
        yield* Log.info("grace reclaimed", fieldsOf(binary))
        return RECLAIMED
      })
    })

  /** No slot here: ask Redis. A ghost of this node's (its binary is not here) is replaced at once. */
  const claimFresh = (binary: BinaryHandle) =>
    Effect.gen(function*() {
      const reply = yield* Effect.exit(store.claim(binary.serverId))
      if (Exit.isFailure(reply)) return UNAVAILABLE
      switch (reply.value._tag) {
        case "Claimed":
          return yield* install(binary, reply.value.epoch, "claim")
        case "Reclaimed": {
          const { fromNode, fromEpoch } = reply.value
          // The grace's node closes its phones of the old claim now (its sweep would within a second).
          if (fromNode !== store.nodeId) options.plane.tellLost(fromNode, binary.serverId, fromEpoch)
          return yield* install(binary, reply.value.epoch, "reclaim", { epoch: fromEpoch, phones: reply.value.phones })
        }
        case "Conflict": {
          const { node, epoch } = reply.value
          if (node === store.nodeId) {
            // A ghost of this node's (its binary is not here): replaced at once, nothing counted.
            const ghost = yield* Effect.exit(store.takeover(binary.serverId, epoch))
            if (Exit.isFailure(ghost)) return UNAVAILABLE
            return ghost.value._tag === "TookOver"
              ? yield* install(binary, ghost.value.epoch, "claim", { epoch, phones: ghost.value.phones })
              : HELD
          }
          // Another node's live binary: the session probes it through that node (§2.1), outside this lock.
          const incumbent = remoteIncumbent(binary.serverId, { node, epoch }, options.plane, options.probeTimeout)
          remotes.set(incumbent, { node, epoch })
          return { _tag: "Conflict", incumbent } satisfies ClaimResult
        }
      }
    })

  const claim = (binary: BinaryHandle): Effect.Effect<ClaimResult> =>
    lock(
      binary.serverId,
      Effect.gen(function*() {
        if (!binary.conn.isOpen()) return GONE
        const local = table.holderOf(binary.serverId)
        if (local !== undefined && local.grace === undefined) {
          return { _tag: "Conflict", incumbent: local.binary } satisfies ClaimResult
        }
        if (local !== undefined) {
          // This node's own grace: reclaimed by its epoch.
          const old = claims.get(binary.serverId)!.epoch
          const reply = yield* Effect.exit(store.takeover(binary.serverId, old))
          if (Exit.isFailure(reply)) return UNAVAILABLE
          if (reply.value._tag === "TookOver") {
            return yield* install(binary, reply.value.epoch, "reclaim", { epoch: old, phones: reply.value.phones })
          }
          // Redis no longer has this grace as ours (expired or reclaimed elsewhere meanwhile).
          yield* lose(binary.serverId)
        }
        return yield* claimFresh(binary)
      })
    )

  /** The incumbent on another node failed its probe: its claim is replaced by epoch (§2.1). */
  const takeoverRemote = (binary: BinaryHandle, incumbent: BinaryHandle, remote: RemoteClaim) =>
    Effect.gen(function*() {
      if (table.holderOf(binary.serverId) !== undefined) return "Superseded" as const
      const reply = yield* Effect.exit(store.takeover(binary.serverId, remote.epoch))
      if (Exit.isFailure(reply)) return "Unavailable" as const
      if (reply.value._tag !== "TookOver") return "Superseded" as const
      // Its node closes its binary 1011 and its phones 4404, as a takeover here would.
      yield* incumbent.conn.close(CloseCodes.HeartbeatTimeout)
      const installed = yield* install(binary, reply.value.epoch, "takeover", { epoch: remote.epoch, phones: reply.value.phones })
      return installed._tag === "Gone" ? "Gone" as const : "TookOver" as const
    })

  const takeover = (binary: BinaryHandle, incumbent: BinaryHandle): Effect.Effect<TakeoverResult> =>
    lock(
      binary.serverId,
      Effect.gen(function*() {
        if (!binary.conn.isOpen()) return "Gone" as const
        const remote = remotes.get(incumbent)
        if (remote !== undefined) return yield* takeoverRemote(binary, incumbent, remote)
        const local = table.holderOf(binary.serverId)
        if (local === undefined || local.binary !== incumbent) return "Superseded" as const
        const held = claims.get(binary.serverId)!
        const reply = yield* Effect.exit(store.takeover(binary.serverId, held.epoch))
        if (Exit.isFailure(reply)) return "Unavailable" as const
        if (reply.value._tag !== "TookOver") {
          yield* lose(binary.serverId)
          return "Superseded" as const
        }
        // The new epoch is this node's either way: if the newcomer left meanwhile, the incumbent keeps the slot under it.
        const old = held.epoch
        held.epoch = reply.value.epoch
        remotePhones.forget(binary.serverId)
        yield* crossNode.announceEnd(binary.serverId, old, reply.value.phones, "reclaimed")
        const took = table.takeover(binary, incumbent)
        if (typeof took === "string") return took
        held.graceSince = undefined
        yield* publishCounts
        yield* Effect.all([
          evict(took.phones, CloseCodes.Reclaimed, "evicted"),
          incumbent.conn.close(CloseCodes.HeartbeatTimeout)
        ], { concurrency: "unbounded", discard: true })
        if (slots.closing !== undefined) yield* binary.conn.close(slots.closing)
        yield* Metric.update(Metrics.takeovers, 1)
        yield* Log.info("server takeover", fieldsOf(binary))
        return "TookOver" as const
      })
    )

  return { claim, takeover }
}
