/**
 * The settings by name (SPEC §9, PUSH.md §1, EDGE.md §1, §3): every flag in `--help` order, the
 * environment-only settings, and how a field of `RelayConfigShape` is spelt on the command line.
 * A flag's "(default …)" in `--help` is the value in `defaults` (or `acmeDefaults`), formatted:
 * a wrong default shows in the help and fails a test that pins SPEC's literal numbers.
 */
import * as Str from "effect/String"
import { acmeDefaults, clusterDefaults, defaults } from "./RelayConfigShape.ts"
import { formatDuration, formatListen } from "./Units.ts"

export const ENV_PREFIX = "PYRYCODE_RELAY"

/** `grace-period` → `PYRYCODE_RELAY_GRACE_PERIOD`. */
export const envName = (key: string): string => `${ENV_PREFIX}_${Str.configCase(key)}`

/** Environment only: `1` turns the production checks on. */
export const PRODUCTION = "production"
/** Environment only (a secret does not belong on a command line, where `ps` shows it). */
export const FCM_CREDENTIALS = "fcm-credentials"

export interface FlagSpec {
  readonly name: string
  readonly boolean?: true
  /** May be given more than once; the values are joined with commas. */
  readonly repeatable?: true
  /** The default as `--help` shows it. */
  readonly default: string
  readonly meaning: string
}

const UNSET = "unset"

/** Every flag that carries a setting, in `--help` order. `--help`/`--version` are handled apart. */
export const flags: ReadonlyArray<FlagSpec> = [
  { name: "listen", default: formatListen(defaults.listen), meaning: "public listener host:port (plain HTTP unless --tls-cert/--tls-key)" },
  { name: "tls-cert", default: UNSET, meaning: "PEM certificate file: serve HTTPS on --listen (needs --tls-key)" },
  { name: "tls-key", default: UNSET, meaning: "PEM private key file (needs --tls-cert)" },
  { name: "domain", repeatable: true, default: UNSET, meaning: "ACME mode: certificates for this DNS name (repeat, or comma-separate, for more)" },
  { name: "acme-directory", default: acmeDefaults.directoryUrl, meaning: "ACME directory URL (staging, or a private CA)" },
  { name: "acme-email", default: UNSET, meaning: "ACME account contact address" },
  { name: "acme-ca-file", default: UNSET, meaning: "extra PEM CA bundle trusted when talking to the ACME directory" },
  { name: "cert-cache", default: ["$HOME", ...acmeDefaults.certCache].join("/"), meaning: "ACME account key, certificates and keys" },
  { name: "https-listen", default: formatListen(acmeDefaults.httpsListen), meaning: "ACME mode: the TLS listener (serves what --listen serves)" },
  { name: "http-listen", default: formatListen(acmeDefaults.httpListen), meaning: "ACME mode: HTTP-01 challenges and /readyz only" },
  { name: "metrics-listen", default: defaults.metricsListen === undefined ? "\"\"" : formatListen(defaults.metricsListen), meaning: "/metrics listener: loopback IP literal with port; \"\" disables" },
  { name: "max-connections", default: `${defaults.maxConnections}`, meaning: "global WebSocket connection cap (> 0)" },
  { name: "max-connections-per-ip", default: `${defaults.maxConnectionsPerIp}`, meaning: "live WebSocket connections per source IP; 0 disables" },
  { name: "trust-x-forwarded-for", boolean: true, default: `${defaults.trustXForwardedFor}`, meaning: "take the source IP from the left-most X-Forwarded-For entry" },
  { name: "proxy-protocol", boolean: true, default: `${defaults.proxyProtocol}`, meaning: "require a PROXY protocol v2 header on every public connection; its source is the client" },
  { name: "grace-period", default: formatDuration(defaults.gracePeriod), meaning: "how long a disconnected binary's server-id is kept for it" },
  { name: "heartbeat-interval", default: formatDuration(defaults.heartbeatInterval), meaning: "ping period on every connection" },
  { name: "heartbeat-timeout", default: formatDuration(defaults.heartbeatTimeout), meaning: "pong deadline before closing 1011" },
  { name: "probe-timeout", default: formatDuration(defaults.probeTimeout), meaning: "conflict liveness probe deadline" },
  { name: "write-timeout", default: formatDuration(defaults.writeTimeout), meaning: "deadline for one write to a peer" },
  { name: "message-timeout", default: formatDuration(defaults.messageTimeout), meaning: "a started message must complete within this" },
  { name: "handshake-timeout", default: formatDuration(defaults.handshakeTimeout), meaning: "HTTP request head deadline" },
  { name: "close-timeout", default: formatDuration(defaults.closeTimeout), meaning: "how long a peer gets to answer our close frame" },
  { name: "max-frame-bytes", default: `${defaults.maxFrameBytes}`, meaning: "largest inbound message" },
  { name: "max-phones-per-server", default: `${defaults.maxPhonesPerServer}`, meaning: "phones per server-id" },
  { name: "phone-outbox-bytes", default: `${defaults.phoneOutboxBytes}`, meaning: "per-phone outbound queue bound (>= max-frame-bytes + 64)" },
  { name: "max-buffered-bytes", default: `${defaults.maxBufferedBytes}`, meaning: "relay-wide outbound buffering bound (>= phone-outbox-bytes)" },
  { name: "rate-limit-burst", default: `${defaults.rateLimitBurst}`, meaning: "per-IP upgrade token bucket size; 0 disables rate limiting" },
  { name: "rate-limit-refill", default: formatDuration(defaults.rateLimitRefill), meaning: "one token back every this long" },
  { name: "drain-timeout", default: formatDuration(defaults.drainTimeout), meaning: "shutdown wait for connections to finish" },
  { name: "log-format", default: defaults.logFormat, meaning: "json or pretty" },
  { name: "log-level", default: defaults.logLevel, meaning: "trace, debug, info, warn, error or fatal" },
  { name: "fcm-credentials-file", default: UNSET, meaning: "push wake: Google service-account JSON key file (or PYRYCODE_RELAY_FCM_CREDENTIALS)" },
  { name: "fcm-project-id", default: defaults.fcmProjectId, meaning: "push wake: Firebase project id" },
  { name: "fcm-endpoint", default: defaults.fcmEndpoint, meaning: "push wake: FCM base URL (http:// only to loopback)" },
  { name: "push-burst", default: `${defaults.pushBurst}`, meaning: "push wakes a server-id may send at once (> 0)" },
  { name: "push-refill", default: formatDuration(defaults.pushRefill), meaning: "one push wake back every this long" },
  { name: "push-max-in-flight", default: `${defaults.pushMaxInFlight}`, meaning: "push sends in flight relay-wide (> 0)" },
  { name: "cluster-redis", default: UNSET, meaning: "cluster mode: redis://[user:password@]host:port[/db] or rediss://… (docs/cluster.md)" },
  { name: "node-id", default: "random 12 hex at boot", meaning: "cluster mode: this process's name, [a-z0-9-]{1,32}" },
  { name: "cluster-prefix", default: clusterDefaults.prefix, meaning: "cluster mode: Redis key and channel prefix" },
  { name: "lease-ttl", default: formatDuration(clusterDefaults.leaseTtl), meaning: "cluster mode: how long a node's claims survive without renewal (>= 3s)" }
]

export const flagByName: ReadonlyMap<string, FlagSpec> = new Map(flags.map((f) => [f.name, f]))

/** Every setting's key: the flags, then the environment-only ones. */
export const settingKeys: ReadonlyArray<string> = [...flags.map((f) => f.name), PRODUCTION, FCM_CREDENTIALS]

const ACME_KEYS: Readonly<Record<string, string>> = {
  domains: "domain",
  directoryUrl: "acme-directory",
  email: "acme-email",
  caFile: "acme-ca-file",
  certCache: "cert-cache",
  httpListen: "http-listen"
}

const CLUSTER_KEYS: Readonly<Record<string, string>> = {
  redisUrl: "cluster-redis",
  nodeId: "node-id",
  prefix: "cluster-prefix",
  leaseTtl: "lease-ttl"
}

/**
 * The setting a field path of `RelayConfigShape` comes from: `["maxFrameBytes"]` →
 * `max-frame-bytes`, `["acme", "httpListen"]` → `http-listen`. In ACME mode `listen` is
 * `--https-listen`; credentials come from their variable or, when given, their file.
 */
export const keyOfField = (
  path: ReadonlyArray<string>,
  context: { readonly acme: boolean; readonly credentialsFile: boolean }
): string => {
  const [head = "", sub = ""] = path
  switch (head) {
    case "tls":
      return sub === "keyFile" ? "tls-key" : "tls-cert"
    case "acme":
      return ACME_KEYS[sub] ?? "domain"
    case "cluster":
      return CLUSTER_KEYS[sub] ?? "cluster-redis"
    case "listen":
      return context.acme ? "https-listen" : "listen"
    case "fcmCredentials":
      return context.credentialsFile ? "fcm-credentials-file" : FCM_CREDENTIALS
    default:
      return Str.camelToSnake(head).replaceAll("_", "-")
  }
}
