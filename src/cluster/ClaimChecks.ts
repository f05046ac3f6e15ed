/**
 * What keeps this node's claims true to Redis between its own transitions (CLUSTER.md §2.4,
 * §2.6–2.9): the expiry of its graces (counted only on Redis's word), the checks after a lapse
 * or an empty Redis, the check of its graces every second, the answers it gives other nodes
 * through the plane, and the drain's hand-over to grace.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { probe } from "../liveness/ConflictProbe.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { evict } from "../registry/Registry.ts"
import type { GraceToken } from "../registry/SlotTable.ts"
import type { CrossNode } from "./CrossNode.ts"
import type { NodeSlots } from "./NodeSlots.ts"
import type { PlaneHandlers } from "./Plane.ts"

/** How long an expiry waits before asking again when Redis did not answer. */
const EXPIRY_RETRY = Duration.seconds(1)
/** What a probe through another node leaves, of the asker's probe timeout, for the answer's way back. */
const PROBE_TRANSIT_MILLIS = 1_000

export const makeClaimChecks = (
  slots: NodeSlots,
  options: { readonly gracePeriod: Duration.Duration; readonly probeTimeout: Duration.Duration; readonly crossNode: CrossNode }
) => {
  const { table, claims, lock, store } = slots
  const lose = (serverId: string) => slots.endHere(serverId, "lost")

  const expireStep = (serverId: string, token: GraceToken) =>
    Effect.gen(function*() {
      const local = table.holderOf(serverId)
      const held = claims.get(serverId)
      if (local === undefined || local.grace !== token || held === undefined) return "done" as const
      const reply = yield* Effect.exit(store.expire(serverId, held.epoch))
      if (Exit.isFailure(reply)) return EXPIRY_RETRY
      switch (reply.value._tag) {
        case "NotDue":
          return Duration.millis(reply.value.millis)
        case "Stale":
          yield* lose(serverId)
          return "done" as const
        case "Gone":
          yield* slots.endHere(serverId, "expired")
          return "done" as const
        case "Expired": {
          const expired = table.expire(serverId, token)!
          claims.delete(serverId)
          slots.remotePhones.forget(serverId)
          // Its phones on other nodes are closed 1000 there; counted here only.
          yield* options.crossNode.announceEnd(serverId, held.epoch, reply.value.phones, "expired")
          yield* Effect.ignore(Effect.all([store.unindexGrace(serverId), store.unindexClaim(serverId)]))
          yield* slots.publishCounts
          yield* evict(expired.phones, CloseCodes.Normal, "grace_expired")
          yield* Metric.update(Metrics.graceExpiries, 1)
          yield* Log.info("grace expired", { server_id: serverId, binary_conn_id: expired.binary.connId })
          return "done" as const
        }
      }
    })

  /**
   * The grace of `token` is due (SPEC §3.4): Redis expires it once in the whole cluster; only the
   * node it answers `expired` counts it. Not yet due by Redis's clock → asks again then; no
   * answer → asks again every second (the phones wait: nobody else may count it).
   */
  const expireWhenDue = (serverId: string, token: GraceToken): Effect.Effect<void> =>
    Effect.gen(function*() {
      while (true) {
        const step = yield* lock(serverId, Effect.uninterruptible(expireStep(serverId, token)))
        if (step === "done") return
        yield* Effect.sleep(step)
      }
    })

  const checkClaim = (serverId: string) =>
    lock(
      serverId,
      Effect.gen(function*() {
        const held = claims.get(serverId)
        const local = table.holderOf(serverId)
        if (held === undefined || local === undefined) return
        const now = yield* Clock.currentTimeMillis
        const graceLeft = held.graceSince === undefined
          ? Duration.zero
          : Duration.millis(Math.max(0, Duration.toMillis(options.gracePeriod) - (now - held.graceSince)))
        const reply = yield* Effect.exit(
          store.assert(serverId, held.epoch, local.grace === undefined ? "live" : "grace", graceLeft, table.phoneIds(serverId))
        )
        if (Exit.isFailure(reply)) return
        if (reply.value._tag === "Lost") return yield* lose(serverId)
        // Re-listed for the reaper (an empty Redis lost the index too).
        yield* Effect.ignore(store.indexClaim(serverId))
      })
    )

  const checkGrace = (serverId: string) =>
    lock(
      serverId,
      Effect.gen(function*() {
        const held = claims.get(serverId)
        if (held === undefined || table.holderOf(serverId)?.grace === undefined) return
        const now = yield* Effect.exit(store.holder(serverId))
        if (Exit.isFailure(now)) return
        if (now.value === undefined) return yield* slots.endHere(serverId, "expired")
        if (now.value.epoch !== held.epoch) yield* lose(serverId)
      })
    )

  /** Another node probes this node's binary of claim `epoch` (§2.1), leaving room for the answer's way back. */
  const probeLocal = (serverId: string, epoch: string) =>
    Effect.suspend(() => {
      const binary = table.binaryFor(serverId)
      if (binary === undefined || claims.get(serverId)?.epoch !== epoch) return Effect.succeed(false)
      const millis = Duration.toMillis(options.probeTimeout)
      return probe(binary.conn, Duration.millis(Math.max(millis / 2, millis - PROBE_TRANSIT_MILLIS)))
    })

  /** Another node took claim `epoch` over (or reclaimed its grace): closed here as in a takeover. */
  const claimLost = (serverId: string, epoch: string) =>
    lock(serverId, Effect.suspend(() => (claims.get(serverId)?.epoch === epoch ? lose(serverId) : Effect.void)))

  const planeHandlers: Omit<PlaneHandlers, "relay"> = { probeLocal, claimLost }

  return {
    expireWhenDue,
    planeHandlers,
    /** After the lease lapsed or Redis came back empty: states every claim, closes those lost (§2.7–2.8). */
    checkClaims: Effect.suspend(() => Effect.forEach([...claims.keys()], checkClaim, { concurrency: 16, discard: true })),
    /**
     * This node's graces: one whose slot Redis no longer has was expired (and counted) elsewhere
     * — its phones here get 1000; one another claim took (a reclaim on another node) — its
     * phones get 4404 now rather than at this node's deadline.
     */
    checkGraces: Effect.suspend(() =>
      Effect.forEach(
        [...claims.entries()].filter(([, held]) => held.graceSince !== undefined).map(([serverId]) => serverId),
        checkGrace,
        { concurrency: 16, discard: true }
      )
    ),
    /** This node's live claims enter grace in Redis (the drain's first step, §2.9). */
    handOver: Effect.suspend(() =>
      Effect.forEach(
        table.liveHolders(),
        (binary) => {
          const held = claims.get(binary.serverId)
          return held === undefined ? Effect.void : Effect.ignore(store.release(binary.serverId, held.epoch, options.gracePeriod))
        },
        { concurrency: "unbounded", discard: true }
      )
    )
  }
}
