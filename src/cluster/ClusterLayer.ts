/**
 * Cluster mode as one layer (CLUSTER.md): what `--cluster-redis` puts in place of the in-memory
 * registry. Loaded on demand (`Relay.ts` imports this module only in cluster mode), so a single
 * process neither loads node-redis nor pays for it at startup.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type { ClusterSettings } from "../config/RelayConfigShape.ts"
import { Availability } from "../lifecycle/Availability.ts"
import * as Metrics from "../observability/Metrics.ts"
import { Registry } from "../registry/Registry.ts"
import * as ClusterRedis from "./ClusterRedis.ts"

/** `/readyz` and the upgrade gate follow Redis's health; `/healthz` names the node. */
const availability = (settings: ClusterSettings) =>
  Layer.effect(
    Availability,
    Effect.gen(function*() {
      const redis = yield* ClusterRedis.ClusterRedis
      return {
        registryReachable: redis.isUp,
        nodeId: settings.nodeId,
        countUnreachable: Metric.update(Metrics.registryUnreachable, 1)
      }
    })
  )

/** The cluster's series exist at 0 before the connection is first tried. */
const touchSeries = Layer.effectDiscard(Metrics.touchCluster)

export const layer = (settings: ClusterSettings) =>
  Layer.mergeAll(Registry.layer, availability(settings)).pipe(
    Layer.provideMerge(ClusterRedis.layer({ url: settings.redisUrl })),
    Layer.provide(touchSeries)
  )
