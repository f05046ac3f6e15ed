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
 * This node's table, claims and lock are `NodeSlots`; claims, reclaims and takeovers are
 * `ClaimTransitions`; what keeps them true to Redis between transitions (expiry, checks, answers
 * to other nodes, the drain's hand-over) is `ClaimChecks`; phones joining and leaving are
 * `PhoneRegistration`. Phones on another node than their binary's (§2.2) are served through the
 * plane: this node's phones of other nodes' claims are its remote slots (`RemoteSlots`), other
 * nodes' phones of its claims stand in its routing (`RemotePhones`), and every end of a claim
 * reaches its phones' nodes (`CrossNode`).
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Scope from "effect/Scope"
import { type BufferLedger, makeBufferLedger } from "../connection/BufferLedger.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import * as Log from "../observability/Log.ts"
import { type GraceTimer, interruptingTimer } from "../registry/GraceTimer.ts"
import type { BinaryHandle } from "../registry/Handles.ts"
import { type Counts, evict, type RegistryShape } from "../registry/Registry.ts"
import { makeClaimChecks } from "./ClaimChecks.ts"
import { makeClaimTransitions } from "./ClaimTransitions.ts"
import { makeCrossNode } from "./CrossNode.ts"
import { makeNodeSlots } from "./NodeSlots.ts"
import type { OwnershipStore, RemotePhone } from "./Ownership.ts"
import { makePhoneRegistration } from "./PhoneRegistration.ts"
import type { PlaneHandlers, PlaneShape } from "./Plane.ts"

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
    const transitions = makeClaimTransitions(slots, { ...options, crossNode })
    const lose = (serverId: string) => slots.endHere(serverId, "lost")

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
      claim: transitions.claim,
      takeover: transitions.takeover,
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
