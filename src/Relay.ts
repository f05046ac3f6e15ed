/**
 * The relay as one layer, in two shapes (see docs/embedding.md):
 *
 * * `layer`: standalone — its own public listener (`/v1/server`, `/v1/client`, `/healthz`,
 *   `/readyz`, the rest to `AppRoutes`), as the service entry runs it;
 * * `layerOnServer(server)`: mounted on a Node server the application owns, next to the
 *   application's own routes on the same port; `routes` adds `/healthz` and `/readyz` to the
 *   application's `HttpRouter`.
 *
 * Both also carry the core (registry, ledger, lifecycle, limits, push wake) and the metrics
 * export with its optional loopback listener, and need only `RelayConfig`. Each use of either is
 * a relay of its own: its own registry, ledger, limits, metric registry and read counter for the
 * gc hint — two relays in one process share nothing by accident.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Http from "node:http"
import { Ledger } from "./connection/BufferLedger.ts"
import { RelayConfig, type RelayConfigShape } from "./config/RelayConfig.ts"
import { describeRedisUrl } from "./config/RedisUrl.ts"
import { version } from "./config/Version.ts"
import { Certificates } from "./edge/Certificates.ts"
import { RelayEndpoints } from "./http/Endpoints.ts"
import { RelayHealth } from "./http/Health.ts"
import { MetricsServer } from "./http/MetricsServer.ts"
import { PublicServer } from "./http/PublicServer.ts"
import { ServerMount } from "./http/ServerMount.ts"
import * as Log from "./observability/Log.ts"
import * as Metrics from "./observability/Metrics.ts"
import { BeforeScrape, PrometheusExport } from "./observability/PrometheusExport.ts"
import { relayMetricRegistry } from "./observability/RelayMetricRegistry.ts"
import { ConnectionCaps } from "./limits/ConnectionCaps.ts"
import { RateLimiter } from "./limits/RateLimiter.ts"
import { ConnectionWatcher } from "./liveness/ConnectionWatcher.ts"
import { Registry } from "./registry/Registry.ts"
import { Lifecycle } from "./lifecycle/Lifecycle.ts"
import * as PushWake from "./push/PushWake.ts"

export { routes } from "./http/Health.ts"

/**
 * The registry and the per-IP rate limit: in memory (the default), or, with `cluster` settings
 * (CLUSTER.md), the cluster layer, whose module — and node-redis with it — is loaded only then.
 * The cluster layer also provides `Availability` (Redis's health for `/readyz` and the gate).
 */
const SharedState: Layer.Layer<Registry | RateLimiter, never, RelayConfig | Ledger> = Layer.unwrap(
  Effect.gen(function*() {
    const config = yield* RelayConfig
    if (config.cluster === undefined) return Layer.merge(Registry.layer, RateLimiter.layer)
    const cluster = yield* Effect.promise(() => import("./cluster/ClusterLayer.ts"))
    return cluster.layer(config.cluster)
  })
)

/**
 * The routing core: one registry, one relay-wide buffer ledger, one lifecycle, one connection
 * watcher (heartbeat and deadlines of every connection), the limits.
 */
export const RelayCore = Layer.mergeAll(
  // One ledger: the cluster registry writes frames from other nodes under the same bound.
  SharedState.pipe(Layer.provideMerge(Ledger.layer)),
  Lifecycle.layer,
  ConnectionWatcher.layer,
  ConnectionCaps.layer
)

/**
 * `buffered_bytes` is read from the ledger and the certificate expiry from `Certificates` at scrape
 * time: always current, free on the hot path. A relay mounted on an application's server has no
 * certificates of its own (the expiry stays 0).
 */
const refreshGauges = Layer.effect(
  BeforeScrape,
  Effect.gen(function*() {
    const ledger = yield* Ledger
    const certificates = yield* Effect.serviceOption(Certificates)
    const expirySeconds = Option.match(certificates, { onNone: () => () => 0, onSome: (c) => c.expirySeconds })
    return Effect.suspend(() =>
      Effect.andThen(
        Metric.update(Metrics.bufferedBytes, ledger.bytes),
        Metric.update(Metrics.certificateExpiry, expirySeconds())
      )
    )
  })
)

const MetricsLayer = MetricsServer.layer.pipe(
  Layer.provideMerge(PrometheusExport.layer.pipe(Layer.provide(refreshGauges)))
)

const limits = (config: RelayConfigShape) => ({
  max_connections: config.maxConnections,
  max_connections_per_ip: config.maxConnectionsPerIp,
  max_phones_per_server: config.maxPhonesPerServer,
  max_frame_bytes: config.maxFrameBytes,
  phone_outbox_bytes: config.phoneOutboxBytes,
  max_buffered_bytes: config.maxBufferedBytes,
  grace_period: Duration.format(config.gracePeriod),
  heartbeat: `${Duration.format(config.heartbeatInterval)}/${Duration.format(config.heartbeatTimeout)}`,
  push_burst: config.pushBurst,
  push_refill: Duration.format(config.pushRefill),
  push_max_in_flight: config.pushMaxInFlight
})

/** Where the endpoints are served: an address (with its TLS, PROXY and ACME settings), or `mounted`. */
interface Where {
  readonly listen: string
  readonly tls?: boolean
  readonly proxy_protocol?: boolean
  readonly domain?: string
  readonly cert_cache?: string
  readonly http_listen?: string
}

/** `relay started` (SPEC §10), with where the endpoints are served. */
const announce = <R>(where: Effect.Effect<Where, never, R>) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const config = yield* RelayConfig
    const metricsServer = yield* MetricsServer
    yield* Log.info("relay started", {
      version,
      ...(yield* where),
      metrics_listen: metricsServer.address === undefined
        ? "disabled"
        : `${metricsServer.address.host}:${metricsServer.address.port}`,
      push: config.fcmCredentials === undefined ? "off" : "fcm",
      ...(config.cluster === undefined ? {} : {
        node_id: config.cluster.nodeId,
        cluster_redis: describeRedisUrl(config.cluster.redisUrl),
        cluster_prefix: config.cluster.prefix,
        lease_ttl: Duration.format(config.cluster.leaseTtl)
      }),
      limits: limits(config)
    })
  }))

/**
 * One relay around `endpoints` (a listener of its own, or a mount on the application's server).
 * Layers close in the reverse of their build order: the endpoints drain first, then push wake
 * interrupts the sends still in flight (so a wake sent during the drain can still finish), then
 * the core. `Layer.fresh`: each use builds a relay of its own, never one shared with another use
 * in the same application (layers are otherwise memoized by identity). The metric registry is
 * provided beneath everything, so every fiber of this relay records into it.
 */
const relay = <A, E, B, EB>(
  endpoints: Layer.Layer<A, E, RelayConfig | RelayEndpoints | RelayHealth | B>,
  where: Effect.Effect<Where, never, A | B | RelayConfig>,
  edge: Layer.Layer<B, EB, RelayConfig>
) =>
  Layer.fresh(
    announce(where).pipe(
      Layer.provideMerge(Layer.mergeAll(endpoints, MetricsLayer)),
      Layer.provideMerge(Layer.mergeAll(RelayEndpoints.layer, RelayHealth.layer)),
      Layer.provideMerge(PushWake.layer),
      Layer.provideMerge(RelayCore),
      Layer.provideMerge(edge),
      Layer.provide(relayMetricRegistry)
    )
  )

/**
 * The standalone relay: everything it serves on a listener of its own; needs `RelayConfig`. In
 * ACME mode its certificates (and the challenge listener) come up before the listener binds.
 */
export const layer = relay(
  PublicServer.layer,
  Effect.gen(function*() {
    const { address } = yield* PublicServer
    const config = yield* RelayConfig
    const acme = config.acme
    const challenge = (yield* Certificates).challengeListen
    return {
      listen: `${address.host}:${address.port}`,
      tls: config.tls !== undefined || acme !== undefined,
      proxy_protocol: config.proxyProtocol,
      ...(acme === undefined ? {} : { domain: acme.domains.join(","), cert_cache: acme.certCache }),
      ...(challenge === undefined ? {} : { http_listen: `${challenge.host}:${challenge.port}` })
    }
  }),
  Certificates.layer
)

/**
 * The relay mounted on `server`, a Node HTTP(S) server the application owns and listens with
 * (e.g. the one it gives `NodeHttpServer.layer`); needs `RelayConfig`, of which `listen`, `tls`
 * and `handshakeTimeout` do not apply (the server is the application's). The relay serves only
 * its two WebSocket endpoints there; add `routes` to the application's `HttpRouter` for
 * `/healthz` and `/readyz`.
 */
export const layerOnServer = (server: Http.Server) =>
  relay(ServerMount.layer(server), Effect.succeed({ listen: "mounted" }), Layer.empty)
