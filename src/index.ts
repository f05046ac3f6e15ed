/**
 * The relay as a library (SPEC §12, docs/embedding.md). Mount it on your own Node server next to
 * your `HttpRouter` routes with `Relay.layerOnServer(server)` (+ `Relay.routes` for its health
 * routes), or run it on a listener of its own with `Relay.layer` (your routes there through
 * `AppRoutes`); either needs only a `RelayConfig` (from values, or from flags/env). Use the
 * `Registry` and the metric definitions on their own.
 */
export { RelayConfig, defaults as relayConfigDefaults } from "./config/RelayConfig.ts"
export type { AcmeSettings, ListenAddress, LogFormat, LogLevelName, RelayConfigShape } from "./config/RelayConfig.ts"
export { relayConfigLayer } from "./config/RelayConfigLayer.ts"
export { BootRefusal, loadRelayConfig, usage } from "./config/Cli.ts"
export { version } from "./config/Version.ts"
export * as Relay from "./Relay.ts"
export { AppRoutes } from "./http/AppRoutes.ts"
export type { AppHandler } from "./http/AppRoutes.ts"
export { PublicServer } from "./http/PublicServer.ts"
export { ServerMount, ServerMountError } from "./http/ServerMount.ts"
export { RelayHealth } from "./http/Health.ts"
export { MetricsServer } from "./http/MetricsServer.ts"
export { makeRegistry, Registry } from "./registry/Registry.ts"
export type { ClaimResult, Counts, RegistryShape } from "./registry/Registry.ts"
export type { BinaryHandle, PhoneHandle } from "./registry/Handles.ts"
export type { CloseInfo, PeerConnection } from "./connection/PeerConnection.ts"
export * as Metrics from "./observability/Metrics.ts"
export { PrometheusExport } from "./observability/PrometheusExport.ts"
export { RelayMetricRegistry } from "./observability/RelayMetricRegistry.ts"
export { MinorGc } from "./node/GcHint.ts"
export * as RelayLogger from "./observability/RelayLogger.ts"
export { Lifecycle } from "./lifecycle/Lifecycle.ts"
export { ConnectionWatcher } from "./liveness/ConnectionWatcher.ts"
export type { ConnectionWatcherShape, WatchOptions } from "./liveness/ConnectionWatcher.ts"
export * as PushWake from "./push/PushWake.ts"
export { parseServiceAccount } from "./push/ServiceAccount.ts"
export type { FcmCredentials } from "./push/ServiceAccount.ts"
