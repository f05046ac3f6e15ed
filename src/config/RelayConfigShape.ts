/**
 * The shape of the relay's configuration and its SPEC §9 defaults: plain data, no I/O, so the
 * schema, the command line and the service can all import it without importing each other.
 */
import * as Duration from "effect/Duration"
import type { RedisUrl } from "./RedisUrl.ts"
import type { FcmCredentials } from "../push/ServiceAccount.ts"
import { DEFAULT_FCM_ENDPOINT, DEFAULT_FCM_PROJECT_ID } from "../push/ServiceAccount.ts"

/**
 * A host and port to listen on. `host` is an IP literal or name, without brackets; `""` (only
 * from `--https-listen`/`--http-listen` `:port`) means every interface.
 */
export interface ListenAddress {
  readonly host: string
  readonly port: number
}

/**
 * ACME mode (EDGE.md §1): certificates for `domains` from the CA at `directoryUrl`, kept in
 * `certCache`. In this mode `RelayConfigShape.listen` is the TLS listener (`--https-listen`).
 */
export interface AcmeSettings {
  /** Lower case, without a trailing dot, each once, in the order given. */
  readonly domains: ReadonlyArray<string>
  readonly directoryUrl: string
  readonly email: string | undefined
  /** Extra PEM CA bundle trusted when talking to the directory. */
  readonly caFile: string | undefined
  /** Absolute path of the cache directory. */
  readonly certCache: string
  /** The HTTP-01 challenge listener; `host` `""` means every interface. */
  readonly httpListen: ListenAddress
}

export const LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"

/** ACME mode's defaults (EDGE.md §1), for the settings `--domain` does not give. */
export const acmeDefaults = {
  directoryUrl: LETS_ENCRYPT_DIRECTORY,
  /** Under the home directory. */
  certCache: [".pyrycode-relay", "certs"],
  /** `""`: every interface. */
  httpsListen: { host: "", port: 443 },
  httpListen: { host: "", port: 80 }
} as const

/**
 * Cluster mode (CLUSTER.md §1): this process is one node of a relay coordinated through Redis.
 * `undefined` in `RelayConfigShape.cluster` is single-process mode, the default.
 */
export interface ClusterSettings {
  /** The Redis URL; may carry a password, so it is only ever shown through `describeRedisUrl`. */
  readonly redisUrl: RedisUrl
  /** This process's name in the cluster, `[a-z0-9-]{1,32}`. */
  readonly nodeId: string
  /** Key and channel prefix, so several relays can share one Redis. */
  readonly prefix: string
  /** How long a node's claims survive without renewal; renewed every third of it. */
  readonly leaseTtl: Duration.Duration
}

/** Cluster mode's defaults for what `--cluster-redis` does not give (the node id is drawn at boot). */
export const clusterDefaults = {
  prefix: "pyrycode-relay",
  leaseTtl: Duration.seconds(15)
} as const

export const LOG_FORMATS = ["json", "pretty"] as const
export type LogFormat = typeof LOG_FORMATS[number]
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"] as const
export type LogLevelName = typeof LOG_LEVELS[number]

/**
 * Every knob of the relay (SPEC §9), already parsed and validated. Built from flags and
 * environment (`loadRelayConfig`), from a `ConfigProvider` (`RelayConfig.layerConfig`) or from
 * values (`RelayConfig.make`); all three go through `RelayConfigSchema`.
 */
export interface RelayConfigShape {
  readonly listen: ListenAddress
  readonly tls: { readonly certFile: string; readonly keyFile: string } | undefined
  /** `undefined` disables the metrics listener (`--metrics-listen ""`). */
  readonly metricsListen: ListenAddress | undefined
  readonly maxConnections: number
  /** 0 disables the per-IP concurrent cap. */
  readonly maxConnectionsPerIp: number
  readonly trustXForwardedFor: boolean
  /**
   * Every connection to the public listener must open with a PROXY protocol v2 header whose
   * source address is the client's (EDGE.md §3). Never together with `trustXForwardedFor`.
   */
  readonly proxyProtocol: boolean
  /** ACME mode (`--domain`), or `undefined`. */
  readonly acme: AcmeSettings | undefined
  readonly gracePeriod: Duration.Duration
  readonly heartbeatInterval: Duration.Duration
  readonly heartbeatTimeout: Duration.Duration
  readonly probeTimeout: Duration.Duration
  readonly writeTimeout: Duration.Duration
  readonly messageTimeout: Duration.Duration
  readonly handshakeTimeout: Duration.Duration
  /** How long a peer gets to answer our close frame before its socket is destroyed (§6). */
  readonly closeTimeout: Duration.Duration
  readonly maxFrameBytes: number
  readonly maxPhonesPerServer: number
  readonly phoneOutboxBytes: number
  readonly maxBufferedBytes: number
  /** 0 disables the per-IP rate limit. */
  readonly rateLimitBurst: number
  readonly rateLimitRefill: Duration.Duration
  readonly drainTimeout: Duration.Duration
  readonly logFormat: LogFormat
  readonly logLevel: LogLevelName
  /** `PYRYCODE_RELAY_PRODUCTION=1`. */
  readonly production: boolean
  /** Push wake (PUSH.md): the checked service-account key; `undefined` = push off. */
  readonly fcmCredentials: FcmCredentials | undefined
  readonly fcmProjectId: string
  /** FCM base URL, without a trailing slash. */
  readonly fcmEndpoint: string
  /** Per-server-id wake bucket: size, and one wake back every `pushRefill`. */
  readonly pushBurst: number
  readonly pushRefill: Duration.Duration
  /** Sends in flight relay-wide. */
  readonly pushMaxInFlight: number
  /** Cluster mode (`--cluster-redis`), or `undefined`: one process is the whole relay. */
  readonly cluster: ClusterSettings | undefined
}

/** SPEC §9 defaults. */
export const defaults: RelayConfigShape = {
  listen: { host: "127.0.0.1", port: 8080 },
  tls: undefined,
  metricsListen: { host: "127.0.0.1", port: 9090 },
  maxConnections: 1000,
  maxConnectionsPerIp: 64,
  trustXForwardedFor: false,
  proxyProtocol: false,
  acme: undefined,
  gracePeriod: Duration.seconds(30),
  heartbeatInterval: Duration.seconds(30),
  heartbeatTimeout: Duration.seconds(30),
  probeTimeout: Duration.seconds(10),
  writeTimeout: Duration.seconds(10),
  messageTimeout: Duration.seconds(30),
  handshakeTimeout: Duration.seconds(5),
  closeTimeout: Duration.seconds(5),
  maxFrameBytes: 262_144,
  maxPhonesPerServer: 16,
  phoneOutboxBytes: 4_194_304,
  maxBufferedBytes: 268_435_456,
  rateLimitBurst: 20,
  rateLimitRefill: Duration.seconds(6),
  drainTimeout: Duration.seconds(10),
  logFormat: "json",
  logLevel: "info",
  production: false,
  fcmCredentials: undefined,
  fcmProjectId: DEFAULT_FCM_PROJECT_ID,
  fcmEndpoint: DEFAULT_FCM_ENDPOINT,
  pushBurst: 6,
  pushRefill: Duration.seconds(10),
  pushMaxInFlight: 32,
  cluster: undefined
}
