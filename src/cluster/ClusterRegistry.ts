/**
 * The registry in cluster mode (CLUSTER.md §2–3): the same `RegistryShape` as the in-memory one,
 * over the same `SlotTable`, which here is this node's cache of the slots it holds. Redis (the
 * `OwnershipStore`) decides who holds a server-id and keeps the cluster-wide phone cap; each
 * transition runs its script first and changes the local table only on the script's answer, under
 * a per-server-id lock, then closes, counts and logs like the in-memory registry.
 *
 * The hot path is untouched: `binaryFor`, `phoneFor` and `isLiveHolder` read the local table
 * synchronously, as they do in a single process.
 *
 * This node's table, claims and lock are `NodeSlots`; what keeps them true to Redis between
 * transitions (expiry, checks, answers to other nodes, the drain's hand-over) is `ClaimChecks`;
 * phones joining and leaving are `PhoneRegistration`. Phones on another node than their binary's
 * (§2.2) are served through the plane: this node's phones of other nodes' claims are its remote
 * slots (`RemoteSlots`), other nodes' phones of its claims stand in its routing (`RemotePhones`),
 * and every end of a claim reaches its phones' nodes (`CrossNode`).
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import { type BufferLedger, makeBufferLedger } from "../connection/BufferLedger.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { type GraceTimer, interruptingTimer } from "../registry/GraceTimer.ts"
import type { BinaryHandle, PhoneHandle } from "../registry/Handles.ts"
import { type ClaimResult, type Counts, evict, type RegistryShape, type TakeoverResult } from "../registry/Registry.ts"
import { makeClaimChecks } from "./ClaimChecks.ts"
import { makeCrossNode } from "./CrossNode.ts"
import { makeNodeSlots } from "./NodeSlots.ts"
import type { OwnershipStore, RemotePhone } from "./Ownership.ts"
import { makePhoneRegistration } from "./PhoneRegistration.ts"
import type { PlaneHandlers, PlaneShape } from "./Plane.ts"
import { type RemoteClaim, remoteIncumbent } from "./RemoteIncumbent.ts"

export interface ClusterRegistryShape extends RegistryShape {
  /** After the lease lapsed or Redis came back empty: states every claim, closes those lost (§2.7–2.8). */
  readonly checkClaims: Effect.Effect<void>
  /** This node's live claims enter grace in Redis (the first step of `closeAll`, §2.9). */
  readonly handOver: Effect.Effect<void>
  /**
   * The sweep of this node's graces: one whose slot Redis no longer has was expired (and
   * counted) elsewhere — its phones here get 1000; one another claim took (a reclaim on another
   * node) — its phones get 4404 now rather than at this node's deadline.
   */
  readonly checkGraces: Effect.Effect<void>
  /** Whether this node holds the slot (live or in grace): then its own timer ends its grace. */
  readonly holds: (serverId: string) => boolean
  /** What this node answers other nodes through the plane. */
  readonly planeHandlers: PlaneHandlers
  /** The backstop: this node's phones of other nodes' claims, checked against Redis (once). */
  readonly checkRemote: Effect.Effect<void>
  /** Phones of this node's claims on nodes that died: dropped, their binaries told (once). */
  readonly reapRemotePhones: Effect.Effect<void>
  /**
   * Another node's claim `epoch` was expired by this node's sweep, which got its phones from
   * Redis: every node with phones of it closes them 1000 (this one included).
   */
  readonly expiredElsewhere: (serverId: string, epoch: string, phones: ReadonlyArray<RemotePhone>) => Effect.Effect<void>
}

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

export const makeClusterRegistry = (options: {
  readonly gracePeriod: Duration.Duration
  readonly maxPhonesPerServer: number
  readonly scope: Scope.Scope
  readonly store: OwnershipStore
  /** The cross-node plane: probes through other nodes, word of claims taken over. */
  readonly plane: PlaneShape
  /** SPEC's `--probe-timeout`: how long another node's incumbent has to answer through its node. */
  readonly probeTimeout: Duration.Duration
  /** Unflushed bytes a binary connection may hold (SPEC §4.4); 4 MiB unless given. */
  readonly binaryBudget?: number
  /** The relay-wide buffer ledger (SPEC §7.4); unbounded unless given. */
  readonly ledger?: BufferLedger
  readonly graceTimer?: GraceTimer
}): Effect.Effect<ClusterRegistryShape> =>
  Effect.sync(() => {
    const { store, gracePeriod } = options
    const timer = options.graceTimer ?? interruptingTimer(options.scope)
    const slots = makeNodeSlots({
      store,
      plane: options.plane,
      maxPhonesPerServer: options.maxPhonesPerServer,
      binaryBudget: options.binaryBudget ?? 4 * 1024 * 1024,
      ledger: options.ledger ?? makeBufferLedger(Number.MAX_SAFE_INTEGER)
    })
    const { table, claims, lock, publishCounts, remote, remotePhones } = slots
    const crossNode = makeCrossNode(slots, options.maxPhonesPerServer)
    const checks = makeClaimChecks(slots, { ...options, crossNode })
    const phones = makePhoneRegistration(slots, options.maxPhonesPerServer)
    /** Incumbents on other nodes handed out by `claim`, for `takeover` to recognise. */
    const remotes = new WeakMap<BinaryHandle, RemoteClaim>()
    const lose = (serverId: string) => slots.endHere(serverId, "lost")
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

    const release = (binary: BinaryHandle): Effect.Effect<void> =>
      lock(
        binary.serverId,
        Effect.gen(function*() {
          const token = table.release(binary)
          const held = claims.get(binary.serverId)
          if (token === undefined || held === undefined) return
          held.graceSince = yield* Clock.currentTimeMillis
          // Its phones on other nodes stop sending now (a frame during grace ends a phone, SPEC §3.4).
          remotePhones.grace(binary.serverId, held.epoch)
          token.cancel = yield* timer.start(gracePeriod, checks.expireWhenDue(binary.serverId, token))
          yield* publishCounts
          yield* Log.info("server released", {
            server_id: binary.serverId,
            binary_conn_id: binary.connId,
            duration: Duration.format(gracePeriod)
          })
          // No answer: the grace runs here anyway, and its expiry ends the claim in Redis.
          const reply = yield* Effect.exit(store.release(binary.serverId, held.epoch, gracePeriod))
          if (Exit.isFailure(reply)) return
          if (reply.value._tag === "Stale") return yield* lose(binary.serverId)
          yield* Effect.ignore(store.indexGrace(binary.serverId, reply.value.deadline))
        })
      )

    /** The drain (§2.9): live claims to grace in Redis first, then every connection closed. */
    const closeAll = (close: CloseCodes.CloseCode): Effect.Effect<void> =>
      Effect.suspend(() => {
        slots.closing = close
        return Effect.andThen(
          checks.handOver,
          Effect.suspend(() => {
            const { binaries, phones } = table.stopGraces()
            const remotePhonesHere = remote.all().flatMap((slot) => [...slot.phones.values()])
            return Effect.all([
              evict([...phones, ...remotePhonesHere], close, "shutdown"),
              Effect.forEach(binaries, (binary) => binary.conn.close(close), { concurrency: "unbounded", discard: true })
            ], { concurrency: "unbounded", discard: true })
          })
        )
      })

    return {
      claim,
      takeover,
      release,
      registerPhone: phones.registerPhone,
      unregisterPhone: phones.unregisterPhone,
      // A miss here is a phone or binary of another node's claim: the remote tables, also synchronous.
      binaryFor: (serverId) => table.binaryFor(serverId) ?? remote.binaryFor(serverId),
      phoneFor: (serverId, connId) =>
        table.phoneFor(serverId, connId) ?? remotePhones.phoneFor(serverId, connId) ?? remote.phoneFor(serverId, connId),
      isLiveHolder: (binary) => (binary.remote === undefined ? table.isLiveHolder(binary) : remote.isLiveHolder(binary)),
      counts: Effect.sync((): Counts => ({ binaries: table.liveBinaries(), phones: table.phones() + remote.phoneCount() })),
      closeAll,
      checkClaims: Effect.andThen(crossNode.rejoinAll, checks.checkClaims),
      handOver: checks.handOver,
      checkGraces: checks.checkGraces,
      holds: (serverId) => claims.has(serverId),
      planeHandlers: { ...checks.planeHandlers, relay: crossNode.relay },
      checkRemote: crossNode.checkRemote,
      reapRemotePhones: crossNode.reapRemotePhones,
      expiredElsewhere: (serverId, epoch, phones) => lock(serverId, crossNode.announceEnd(serverId, epoch, phones, "expired"))
    } satisfies ClusterRegistryShape
  })
