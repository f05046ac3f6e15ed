/**
 * The defaults as the specifications write them (SPEC §9, §6, §7, PUSH.md §1), typed out here and
 * never taken from `defaults`: a test that compared the loaded config with `defaults` would
 * stay green when a default is changed to a wrong value.
 */
import * as Duration from "effect/Duration"
import type { RelayConfigShape } from "../../src/config/RelayConfig.ts"

/** Durations in milliseconds, so a config can be compared with `plain(config)`. */
export const SPEC_DEFAULTS = {
  listen: { host: "127.0.0.1", port: 8080 },
  tls: undefined,
  metricsListen: { host: "127.0.0.1", port: 9090 },
  maxConnections: 1000,
  maxConnectionsPerIp: 64,
  trustXForwardedFor: false,
  proxyProtocol: false,
  acme: undefined,
  gracePeriod: 30_000,
  heartbeatInterval: 30_000,
  heartbeatTimeout: 30_000,
  probeTimeout: 10_000,
  writeTimeout: 10_000,
  messageTimeout: 30_000,
  handshakeTimeout: 5_000,
  closeTimeout: 5_000,
  maxFrameBytes: 262_144,
  maxPhonesPerServer: 16,
  phoneOutboxBytes: 4_194_304,
  maxBufferedBytes: 268_435_456,
  rateLimitBurst: 20,
  rateLimitRefill: 6_000,
  drainTimeout: 10_000,
  logFormat: "json",
  logLevel: "info",
  production: false,
  fcmCredentials: undefined,
  fcmProjectId: "pyrycode-mobile",
  fcmEndpoint: "https://fcm.googleapis.com",
  pushBurst: 6,
  pushRefill: 10_000,
  pushMaxInFlight: 32,
  cluster: undefined
} as const

/** `config` with every duration in milliseconds. */
export const plain = (config: RelayConfigShape): Record<string, unknown> =>
  Object.fromEntries(Object.entries(config).map(([k, v]) => [k, Duration.isDuration(v) ? Duration.toMillis(v) : v]))

/** `--help`'s "(default …)" for every flag, as SPEC §9, PUSH.md §1 and EDGE.md §1 write them. */
export const HELP_DEFAULTS: Readonly<Record<string, string>> = {
  "listen": "127.0.0.1:8080",
  "tls-cert": "unset",
  "tls-key": "unset",
  "domain": "unset",
  "acme-directory": "https://acme-v02.api.letsencrypt.org/directory",
  "acme-email": "unset",
  "acme-ca-file": "unset",
  "cert-cache": "$HOME/.pyrycode-relay/certs",
  "https-listen": ":443",
  "http-listen": ":80",
  "metrics-listen": "127.0.0.1:9090",
  "max-connections": "1000",
  "max-connections-per-ip": "64",
  "trust-x-forwarded-for": "false",
  "proxy-protocol": "false",
  "grace-period": "30s",
  "heartbeat-interval": "30s",
  "heartbeat-timeout": "30s",
  "probe-timeout": "10s",
  "write-timeout": "10s",
  "message-timeout": "30s",
  "handshake-timeout": "5s",
  "close-timeout": "5s",
  "max-frame-bytes": "262144",
  "max-phones-per-server": "16",
  "phone-outbox-bytes": "4194304",
  "max-buffered-bytes": "268435456",
  "rate-limit-burst": "20",
  "rate-limit-refill": "6s",
  "drain-timeout": "10s",
  "log-format": "json",
  "log-level": "info",
  "fcm-credentials-file": "unset",
  "fcm-project-id": "pyrycode-mobile",
  "fcm-endpoint": "https://fcm.googleapis.com",
  "push-burst": "6",
  "push-refill": "10s",
  "push-max-in-flight": "32",
  // CLUSTER.md §1
  "cluster-redis": "unset",
  "node-id": "random 12 hex at boot",
  "cluster-prefix": "pyrycode-relay",
  "lease-ttl": "15s"
}
