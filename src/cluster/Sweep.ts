/**
 * What every node does for the cluster on its `Clock` (CLUSTER.md §2.4, §2.6, §3):
 *
 * * **Reaper**, every third of `--lease-ttl`: a member node whose lease lapsed is dead; each of
 *   its live claims (from its claims index) enters grace now, through the `reap` script, so a
 *   binary reconnecting anywhere reclaims it and a grace nobody reclaims expires. Several nodes
 *   may reap at once; the script lets one of them make each transition. Then the phones a dead
 *   node had on this node's claims leave (`reapRemotePhones`).
 * * **Overdue graces**, every second: a grace past its deadline by more than `SLACK` whose
 *   holder is not this node (a dead node's, or one its holder lost track of) is expired here —
 *   Redis answers `expired` to one caller in the cluster, which counts it. The holder's own
 *   timer normally wins well within the slack.
 * * **This node's graces**, every second (`ClusterRegistryShape.checkGraces`), and the claims of
 *   its phones whose binary is on another node (`checkRemote`: the backstop for a lost word).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { ClusterRegistryShape } from "./ClusterRegistry.ts"
import type { OwnershipStore } from "./Ownership.ts"

/** How far past its deadline a grace must be before a node other than its holder expires it. */
export const SLACK = Duration.seconds(2)
const EVERY = Duration.seconds(1)
/** Overdue graces handled per pass (the rest wait a second: the pass stays short). */
const BATCH = 64

export interface SweepOptions {
  readonly store: OwnershipStore
  readonly registry: ClusterRegistryShape
  readonly gracePeriod: Duration.Duration
  readonly leaseTtl: Duration.Duration
  /** Redis's clock now (ms), as `ClusterRedis` estimates it. */
  readonly redisTimeMillis: Effect.Effect<number>
}

export const makeSweep = (options: SweepOptions) => {
  const { store, registry } = options

  /** One dead node's claims to grace, then its index and membership dropped. */
  const reapNode = (nodeId: string) =>
    Effect.gen(function*() {
      const serverIds = yield* store.claimsOf(nodeId)
      yield* Effect.forEach(serverIds, (serverId) =>
        Effect.gen(function*() {
          const reply = yield* store.reap(serverId, nodeId, options.gracePeriod)
          if (reply._tag === "Other") return
          yield* store.indexGrace(serverId, reply.deadline)
          if (reply._tag === "Reaped") {
            yield* Log.info("server released", {
              server_id: serverId,
              node_id: nodeId,
              duration: Duration.format(options.gracePeriod)
            })
          }
        }), { concurrency: 16, discard: true })
      yield* store.forget(nodeId)
    })

  const reapDead = Effect.gen(function*() {
    const members = yield* store.members
    for (const nodeId of members) {
      if (nodeId === store.nodeId) continue
      if (yield* store.nodeAlive(nodeId)) continue
      yield* reapNode(nodeId)
    }
  })

  /** Expires one overdue grace of another holder's; counts it when Redis says this node did. */
  const expireOverdue = (serverId: string) =>
    Effect.gen(function*() {
      if (registry.holds(serverId)) return
      const holder = yield* store.holder(serverId)
      if (holder === undefined || holder.state !== "grace") return yield* store.unindexGrace(serverId)
      const reply = yield* store.expire(serverId, holder.epoch)
      if (reply._tag === "NotDue") return
      yield* store.unindexGrace(serverId)
      if (reply._tag !== "Expired") return
      // Its phones, on every node, are closed 1000; the expiry is counted here, once.
      yield* registry.expiredElsewhere(serverId, holder.epoch, reply.phones)
      yield* Metric.update(Metrics.graceExpiries, 1)
      yield* Log.info("grace expired", { server_id: serverId, node_id: holder.node })
    })

  const expireOverdueGraces = Effect.gen(function*() {
    const now = yield* options.redisTimeMillis
    const due = yield* store.dueGraces(now - Duration.toMillis(SLACK), BATCH)
    yield* Effect.forEach(due, (serverId) => Effect.ignore(expireOverdue(serverId)), { concurrency: 16, discard: true })
  })

  /** Every second: this node's graces and the overdue ones; every third of the lease: the reaper. */
  const run: Effect.Effect<never, never, Scope.Scope> = Effect.gen(function*() {
    const reapEvery = Math.max(1, Math.floor(Duration.toMillis(options.leaseTtl) / 3 / Duration.toMillis(EVERY)))
    for (let pass = 1;; pass++) {
      yield* Effect.sleep(EVERY)
      yield* registry.checkGraces
      yield* registry.checkRemote
      // No answer from Redis: the next pass tries again.
      yield* Effect.ignore(expireOverdueGraces)
      if (pass % reapEvery === 0) {
        yield* Effect.ignore(reapDead)
        yield* registry.reapRemotePhones
      }
    }
  })

  return { reapDead, expireOverdueGraces, run }
}
