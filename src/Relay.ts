/**
 * The relay as one layer: registry, ledger and lifecycle (the core), the public listener, and
 * the metrics export with its loopback listener. Needs only `RelayConfig`, so a larger Effect app
 * can run it inside its own `Layer.launch` (see docs/embedding.md).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import { Ledger } from "./connection/BufferLedger.ts"
import { RelayConfig } from "./config/RelayConfig.ts"
import { version } from "./config/Version.ts"
import { MetricsServer } from "./http/MetricsServer.ts"
import { PublicServer } from "./http/PublicServer.ts"
import * as Log from "./observability/Log.ts"
import * as Metrics from "./observability/Metrics.ts"
import { BeforeScrape, PrometheusExport } from "./observability/PrometheusExport.ts"
import { ConnectionCaps } from "./limits/ConnectionCaps.ts"
import { RateLimiter } from "./limits/RateLimiter.ts"
import { ConnectionWatcher } from "./liveness/ConnectionWatcher.ts"
import { Registry } from "./registry/Registry.ts"
import { Lifecycle } from "./lifecycle/Lifecycle.ts"
import * as PushWake from "./push/PushWake.ts"

/**
 * The routing core: one registry, one relay-wide buffer ledger, one lifecycle, one connection
 * watcher (heartbeat and deadlines of every connection), the limits.
 */
export const RelayCore = Layer.mergeAll(
  Registry.layer,
  Ledger.layer,
  Lifecycle.layer,
  ConnectionWatcher.layer,
  RateLimiter.layer,
  ConnectionCaps.layer
)

/** `buffered_bytes` is read from the ledger at scrape time: always current, free on the hot path. */
const refreshGauges = Layer.effect(
  BeforeScrape,
  Effect.map(Ledger, (ledger) => Effect.suspend(() => Metric.update(Metrics.bufferedBytes, ledger.bytes)))
)

const MetricsLayer = MetricsServer.layer.pipe(
  Layer.provideMerge(PrometheusExport.layer.pipe(Layer.provide(refreshGauges)))
)

const announce = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* RelayConfig
  const publicServer = yield* PublicServer
  const metricsServer = yield* MetricsServer
  yield* Log.info("relay started", {
    version,
    listen: `${publicServer.address.host}:${publicServer.address.port}`,
    metrics_listen: metricsServer.address === undefined
      ? "disabled"
      : `${metricsServer.address.host}:${metricsServer.address.port}`,
    tls: config.tls !== undefined,
    push: config.fcmCredentials === undefined ? "off" : "fcm",
    limits: {
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
    }
  })
}))

/**
 * Everything the relay serves; needs `RelayConfig`. Layers close in the reverse of their build
 * order: the public listener drains first, then push wake interrupts the sends still in flight
 * (so a wake sent during the drain can still finish), then the core.
 */
export const layer = announce.pipe(
  Layer.provideMerge(Layer.mergeAll(PublicServer.layer, MetricsLayer)),
  Layer.provideMerge(PushWake.layer),
  Layer.provideMerge(RelayCore)
)
