/**
 * Cluster mode as one layer (CLUSTER.md): what `--cluster-redis` puts in place of the in-memory
 * registry — the Redis connection, this node's lease, the cluster registry over Redis, and the
 * `Availability` that `/readyz` and the upgrade gate read. Loaded on demand (`Relay.ts` imports
 * this module only in cluster mode), so a single process neither loads node-redis nor pays for it.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import { randomBytes } from "node:crypto"
import { RelayConfig } from "../config/RelayConfig.ts"
import { Ledger } from "../connection/BufferLedger.ts"
import type { ClusterSettings } from "../config/RelayConfigShape.ts"
import { Availability } from "../lifecycle/Availability.ts"
import * as Metrics from "../observability/Metrics.ts"
import { RateLimiter } from "../limits/RateLimiter.ts"
import { Registry } from "../registry/Registry.ts"
import { makeClusterRateLimiter } from "./ClusterRateLimiter.ts"
import * as ClusterRedis from "./ClusterRedis.ts"
import { makeClusterRegistry } from "./ClusterRegistry.ts"
import { clusterKeys } from "./Keys.ts"
import { keepLease } from "./NodeLease.ts"
import { redisOwnership } from "./Ownership.ts"
import { makePlane, type PlaneHandlers } from "./Plane.ts"
import { makeSweep } from "./Sweep.ts"

/**
 * The registry and its availability. The registry's drain (`closeAll`) hands live claims to
 * grace in Redis before anything is closed (§2.9); this layer's scope, which closes after the
 * listener drained, then gives the lease up.
 */
const clusterRegistry = (settings: ClusterSettings) =>
  Layer.effectContext(
    Effect.gen(function*() {
      const config = yield* RelayConfig
      const redis = yield* ClusterRedis.ClusterRedis
      const scope = yield* Effect.scope
      // One token per process: a second process started with the same node id is told apart.
      const token = randomBytes(8).toString("hex")
      const store = redisOwnership(redis, clusterKeys(settings.prefix), settings.nodeId, token)
      // The plane hands what arrives to the registry, which is built with the plane: tied here.
      let handlers: PlaneHandlers | undefined
      const plane = yield* makePlane({
        redis,
        prefix: settings.prefix,
        nodeId: settings.nodeId,
        handlers: () => handlers,
        nodeAlive: store.nodeAlive
      })
      const registry = yield* makeClusterRegistry({
        gracePeriod: config.gracePeriod,
        maxPhonesPerServer: config.maxPhonesPerServer,
        scope,
        store,
        plane,
        probeTimeout: config.probeTimeout,
        binaryBudget: config.phoneOutboxBytes,
        ledger: yield* Ledger
      })
      handlers = registry.planeHandlers
      const lease = yield* keepLease({
        ttl: settings.leaseTtl,
        generation: redis.generation,
        nextGeneration: redis.nextGeneration,
        lease: store.lease,
        resign: store.resign,
        onLapsed: registry.checkClaims
      })
      yield* Effect.addFinalizer(() => lease.resign)
      // Word published to this node while its inbox was reconnecting is lost: its claims are
      // checked again each time the inbox is back (a takeover elsewhere is found then).
      yield* Effect.forkScoped(Effect.forever(Effect.andThen(redis.nextSubscriberStart, registry.checkClaims)))
      yield* Effect.forkScoped(
        makeSweep({
          store,
          registry,
          gracePeriod: config.gracePeriod,
          leaseTtl: settings.leaseTtl,
          redisTimeMillis: redis.redisTimeMillis
        }).run
      )
      const limiter = yield* makeClusterRateLimiter({
        burst: config.rateLimitBurst,
        refill: config.rateLimitRefill,
        redis,
        prefix: settings.prefix
      })
      return Context.make(Registry, registry).pipe(
        Context.add(RateLimiter, limiter),
        Context.add(Availability, {
          registryReachable: () => redis.isUp() && lease.held(),
          nodeId: settings.nodeId,
          countUnreachable: Metric.update(Metrics.registryUnreachable, 1)
        })
      )
    })
  )

/** The cluster's series exist at 0 before the connection is first tried. */
const touchSeries = Layer.effectDiscard(Metrics.touchCluster)

export const layer = (settings: ClusterSettings) =>
  clusterRegistry(settings).pipe(
    Layer.provideMerge(ClusterRedis.layer({ url: settings.redisUrl })),
    Layer.provide(touchSeries)
  )
