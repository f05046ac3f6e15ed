/**
 * This node's lease (CLUSTER.md §2.6–2.7, §3): one Redis key with a TTL of `--lease-ttl`, renewed
 * every third of it on Effect's `Clock`. The node serves claims and registrations only while it
 * holds the lease:
 *
 * * at boot the lease is taken; if another process holds this node id's lease, the node waits
 *   (answering 503) until that lease is released or lapses, rather than sharing an identity;
 * * a renewal that finds the key gone (the node was paused past its lease, partitioned, or Redis
 *   restarted empty) takes it again and runs `onLapsed`, which checks every claim of the node
 *   against Redis before anything else relies on them (fencing, re-assertion);
 * * after every reconnect of the Redis connection (Redis may be a fresh, empty one) the lease
 *   is renewed at once, and counts as held only once that renewal is confirmed;
 * * while Redis does not answer, the node counts its lease lost once `ttl` has passed since the
 *   last renewal it sent that was confirmed: from then on it must assume other nodes treat it as dead.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Scope from "effect/Scope"
import type { RegistryUnavailable } from "../domain/Errors.ts"
import * as Log from "../observability/Log.ts"
import type { LeaseReply } from "./Ownership.ts"

export interface NodeLeaseShape {
  /** Whether this node holds its lease now (confirmed less than `ttl` ago). */
  readonly held: () => boolean
  /** Drain: stops renewing and gives the lease up (best effort). */
  readonly resign: Effect.Effect<void>
}

export interface NodeLeaseOptions {
  readonly ttl: Duration.Duration
  /** The connection's generation (`ClusterRedis`): a renewal confirms the lease for one generation only. */
  readonly generation: () => number
  /** Completes when the generation changes: the lease is renewed at once then. */
  readonly nextGeneration: Effect.Effect<void>
  readonly lease: (ttl: Duration.Duration) => Effect.Effect<LeaseReply, RegistryUnavailable>
  readonly resign: Effect.Effect<void, RegistryUnavailable>
  /** The lease had lapsed and is held again: check this node's claims against Redis. */
  readonly onLapsed: Effect.Effect<void>
}

/** Renewals per lease period. */
const RENEWALS_PER_TTL = 3

export const keepLease = (options: NodeLeaseOptions): Effect.Effect<NodeLeaseShape, never, Scope.Scope> =>
  Effect.gen(function*() {
    // `held` is read synchronously by the upgrade gate: the running Clock (TestClock in tests).
    const clock = yield* Clock.Clock
    const ttlMillis = Duration.toMillis(options.ttl)
    const every = Duration.millis(Math.floor(ttlMillis / RENEWALS_PER_TTL))
    /** When the last confirmed renewal was sent: the lease runs at least `ttl` from then. */
    let confirmedAt: number | undefined
    /** The connection generation that renewal was confirmed on. */
    let confirmedGeneration = -1
    let acquired = false
    let stopped = false
    let takenLogged = false

    const renew = Effect.gen(function*() {
      const sentAt = yield* Clock.currentTimeMillis
      const generation = options.generation()
      const reply = yield* Effect.exit(options.lease(options.ttl))
      if (Exit.isFailure(reply) || stopped) return
      switch (reply.value) {
        case "held":
          confirmedAt = sentAt
          confirmedGeneration = generation
          return
        case "lost": {
          const first = !acquired
          acquired = true
          takenLogged = false
          // At boot the key is absent by design; later its absence means it lapsed.
          if (!first) {
            yield* Log.warn("node lease lapsed")
            yield* options.onLapsed
          }
          // Held again only once the claims are checked: no claim is served on a lapsed lease.
          confirmedAt = sentAt
          confirmedGeneration = generation
          return
        }
        case "taken":
          confirmedAt = undefined
          if (!takenLogged) yield* Log.warn("node id in use")
          takenLogged = true
          return
      }
    })

    const loop = Effect.gen(function*() {
      while (!stopped) {
        yield* Effect.raceFirst(Effect.sleep(every), options.nextGeneration)
        yield* renew
      }
    })
    // The first renewal before the node answers anything: ready as soon as boot is done.
    yield* renew
    yield* Effect.forkScoped(loop)

    return {
      held: () => {
        if (confirmedAt === undefined || stopped || confirmedGeneration !== options.generation()) return false
        return clock.currentTimeMillisUnsafe() - confirmedAt < ttlMillis
      },
      resign: Effect.suspend(() => {
        stopped = true
        confirmedAt = undefined
        return Effect.ignore(options.resign)
      })
    } satisfies NodeLeaseShape
  })
