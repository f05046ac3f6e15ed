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
 * transitions (expiry, checks, answers to other nodes, the drain's hand-over) is `ClaimChecks`.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { NoServer, PhonesAtCap, RegistryUnavailable, ServerElsewhere } from "../domain/Errors.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { type GraceTimer, interruptingTimer } from "../registry/GraceTimer.ts"
import type { BinaryHandle, PhoneHandle } from "../registry/Handles.ts"
import { type ClaimResult, type Counts, evict, type RegisterError, type RegistryShape, type TakeoverResult } from "../registry/Registry.ts"
import { makeClaimChecks } from "./ClaimChecks.ts"
import { makeNodeSlots } from "./NodeSlots.ts"
import type { OwnershipStore } from "./Ownership.ts"
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
}

/** A conn_id clash with another node's phone of the slot is redrawn at most this often. */
const CONN_ID_DRAWS = 3

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
  readonly graceTimer?: GraceTimer
}): Effect.Effect<ClusterRegistryShape> =>
  Effect.sync(() => {
    const { store, gracePeriod } = options
    const timer = options.graceTimer ?? interruptingTimer(options.scope)
    const slots = makeNodeSlots(store, options.maxPhonesPerServer)
    const { table, claims, lock, publishCounts } = slots
    const checks = makeClaimChecks(slots, options)
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
     */
    const install = (binary: BinaryHandle, epoch: string, counted: "claim" | "reclaim" | "takeover") =>
      Effect.suspend((): Effect.Effect<ClaimResult> => {
        const local = table.claim(binary)
        if (local._tag === "Gone") {
          // Redis holds a live claim of this node for a binary that left: end it at once.
          return Effect.as(Effect.ignore(store.expire(binary.serverId, epoch)), GONE)
        }
        claims.set(binary.serverId, { epoch, graceSince: undefined })
        const phones = local._tag === "Reclaimed" ? local.phones : []
        return Effect.gen(function*() {
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
            return yield* install(binary, reply.value.epoch, "reclaim")
          }
          case "Conflict": {
            const { node, epoch } = reply.value
            if (node === store.nodeId) {
              // A ghost of this node's (its binary is not here): replaced at once, nothing counted.
              const ghost = yield* Effect.exit(store.takeover(binary.serverId, epoch))
              if (Exit.isFailure(ghost)) return UNAVAILABLE
              return ghost.value._tag === "TookOver" ? yield* install(binary, ghost.value.epoch, "claim") : HELD
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
            const reply = yield* Effect.exit(store.takeover(binary.serverId, claims.get(binary.serverId)!.epoch))
            if (Exit.isFailure(reply)) return UNAVAILABLE
            if (reply.value._tag === "TookOver") return yield* install(binary, reply.value.epoch, "reclaim")
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
        const installed = yield* install(binary, reply.value.epoch, "takeover")
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
          held.epoch = reply.value.epoch
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

    const registerPhone = (
      serverId: string,
      make: (connId: string, servedBy: BinaryHandle) => PhoneHandle
    ): Effect.Effect<PhoneHandle, RegisterError> =>
      lock(
        serverId,
        Effect.gen(function*() {
          const held = claims.get(serverId)
          if (held === undefined) {
            // Not held here: NoServer, or held on another node (not relayed yet: docs/cluster.md).
            const holder = yield* store.holder(serverId)
            return yield* holder === undefined ? new NoServer() : new ServerElsewhere()
          }
          for (let draw = 0; draw < CONN_ID_DRAWS; draw++) {
            const live = table.phoneIds(serverId)
            if (live.length >= options.maxPhonesPerServer) return yield* new PhonesAtCap()
            const connId = table.issueConnId(serverId)
            const reply = yield* store.register(serverId, connId, options.maxPhonesPerServer, held.epoch, live)
            switch (reply._tag) {
              case "Duplicate":
                continue
              case "AtCap":
                return yield* new PhonesAtCap()
              case "NoServer":
              case "Moved":
                // Redis is not in step with this node's claim: it is checked again at the next lapse.
                return yield* new RegistryUnavailable({ reason: "out of step" })
              case "Ok": {
                const phone = table.registerAs(serverId, connId, make)
                if (typeof phone === "string") return yield* new PhonesAtCap()
                yield* publishCounts
                if (slots.closing !== undefined) yield* evict([phone], slots.closing, "shutdown")
                yield* Log.info("phone registered", {
                  server_id: serverId,
                  conn_id: phone.connId,
                  ...(phone.deviceName === undefined ? {} : { device_name: phone.deviceName })
                })
                return phone
              }
            }
          }
          return yield* new RegistryUnavailable({ reason: "conn_id clash" })
        })
      )

    const unregisterPhone = (phone: PhoneHandle): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (!table.unregister(phone)) return Effect.void
        return Effect.gen(function*() {
          yield* publishCounts
          yield* Log.info("phone unregistered", { server_id: phone.serverId, conn_id: phone.connId })
          // No answer: the entry is dropped by the next registration that finds the slot full.
          yield* Effect.ignore(store.unregister(phone.serverId, phone.connId))
        })
      })

    /** The drain (§2.9): live claims to grace in Redis first, then every connection closed. */
    const closeAll = (close: CloseCodes.CloseCode): Effect.Effect<void> =>
      Effect.suspend(() => {
        slots.closing = close
        return Effect.andThen(
          checks.handOver,
          Effect.suspend(() => {
            const { binaries, phones } = table.stopGraces()
            return Effect.all([
              evict(phones, close, "shutdown"),
              Effect.forEach(binaries, (binary) => binary.conn.close(close), { concurrency: "unbounded", discard: true })
            ], { concurrency: "unbounded", discard: true })
          })
        )
      })

    return {
      claim,
      takeover,
      release,
      registerPhone,
      unregisterPhone,
      binaryFor: (serverId) => table.binaryFor(serverId),
      phoneFor: (serverId, connId) => table.phoneFor(serverId, connId),
      isLiveHolder: (binary) => table.isLiveHolder(binary),
      counts: Effect.sync((): Counts => ({ binaries: table.liveBinaries(), phones: table.phones() })),
      closeAll,
      checkClaims: checks.checkClaims,
      handOver: checks.handOver,
      checkGraces: checks.checkGraces,
      holds: (serverId) => claims.has(serverId),
      planeHandlers: checks.planeHandlers
    } satisfies ClusterRegistryShape
  })
