/**
 * Settings read by key (the command line, or a `ConfigProvider`) → a `RelayConfigShape`: fill
 * the defaults, apply the few rules that are about which settings were *given* (a flag that only
 * means something in ACME mode, the credentials file), then the schema's rules and the
 * production checks, which every source shares.
 */
import * as Effect from "effect/Effect"
import { randomBytes } from "node:crypto"
import * as Path from "node:path"
import { NOT_A_KEY, parseServiceAccount, readKeyFile } from "../push/ServiceAccount.ts"
import { FCM_CREDENTIALS, keyOfField } from "./Flags.ts"
import { checkProduction } from "./Production.ts"
import { BootRefusal } from "./Refusal.ts"
import type { Namer } from "./Refusal.ts"
import { validateRelayConfig } from "./RelayConfigSchema.ts"
import { acmeDefaults, clusterDefaults, defaults } from "./RelayConfigShape.ts"
import type { RelayConfigShape } from "./RelayConfigShape.ts"
import type { SettingKey, Settings } from "./Settings.ts"

/** How one source names its settings in refusals. */
export interface SettingNames {
  /** A setting by key: `--grace-period`, `PYRYCODE_RELAY_GRACE_PERIOD`, `relay.grace-period`. */
  readonly nameOf: (key: SettingKey) => string
  /** Production mode, as its refusals start: `PYRYCODE_RELAY_PRODUCTION=1`. */
  readonly productionLabel: string
  /** The listen setting, as production's refusal asks for it: `--listen (or PYRYCODE_RELAY_LISTEN)`. */
  readonly listenHint: string
}

/** Settings that only mean something in ACME mode; given without `domain`, they are refused. */
const ACME_ONLY = ["acme-directory", "acme-email", "acme-ca-file", "cert-cache", "http-listen"] as const

/** Settings that only mean something in cluster mode; given without `cluster-redis`, they are refused. */
const CLUSTER_ONLY = ["node-id", "cluster-prefix", "lease-ttl"] as const

/** CLUSTER.md §1: a node without `--node-id` gets 12 random hex digits at boot. */
export const randomNodeId = (): string => randomBytes(6).toString("hex")

/** The service-account key, from its variable or from `--fcm-credentials-file` (never both). */
const credentials = (s: Settings, names: SettingNames) =>
  Effect.gen(function*() {
    const file = s["fcm-credentials-file"]
    if (file === undefined) return s[FCM_CREDENTIALS]
    const refuse = (reason: string) => new BootRefusal({ message: reason })
    const flag = names.nameOf("fcm-credentials-file")
    if (s[FCM_CREDENTIALS] !== undefined) {
      return yield* refuse(`${names.nameOf(FCM_CREDENTIALS)} and ${flag} are both set (give one)`)
    }
    const read = readKeyFile(file)
    if ("problem" in read) return yield* refuse(`${flag}: cannot be read (${read.problem})`)
    const parsed = parseServiceAccount(read.text)
    if (parsed === undefined) return yield* refuse(`${flag}: ${NOT_A_KEY}`)
    return parsed
  })

/** `home` is where the certificate cache lives by default. */
export const settle = (
  s: Settings,
  names: SettingNames,
  home: string
): Effect.Effect<RelayConfigShape, BootRefusal> =>
  Effect.gen(function*() {
    const refuse = (message: string) => Effect.fail(new BootRefusal({ message }))
    const acmeMode = s.domain !== undefined
    // EDGE.md §1: in ACME mode the TLS listener is --https-listen, so --listen has no place, and
    // --https-listen has no place outside it (it has no field of its own to carry it).
    if (!acmeMode && s["https-listen"] !== undefined) {
      return yield* refuse(`${names.nameOf("https-listen")} needs ${names.nameOf("domain")} (ACME mode)`)
    }
    if (acmeMode && s.listen !== undefined) {
      return yield* refuse(
        `${names.nameOf("domain")} cannot be combined with ${names.nameOf("listen")} (in ACME mode the TLS listener is ${
          names.nameOf("https-listen")
        })`
      )
    }
    const fcmCredentials = yield* credentials(s, names)
    const redisUrl = s["cluster-redis"]
    const clusterOnly = CLUSTER_ONLY.find((key) => s[key] !== undefined)
    if (redisUrl === undefined && clusterOnly !== undefined) {
      return yield* refuse(`${names.nameOf(clusterOnly)} needs ${names.nameOf("cluster-redis")} (cluster mode)`)
    }

    const certCache = s["cert-cache"]
    const acme = acmeMode || ACME_ONLY.some((key) => s[key] !== undefined)
      ? {
        domains: s.domain,
        directoryUrl: s["acme-directory"] ?? (acmeMode ? acmeDefaults.directoryUrl : undefined),
        email: s["acme-email"],
        caFile: s["acme-ca-file"],
        // Resolved now: the process may change directory later, the cache must not move.
        certCache: certCache !== undefined
          ? certCache === "" ? "" : Path.resolve(certCache)
          : acmeMode
          ? Path.join(home, ...acmeDefaults.certCache)
          : undefined,
        httpListen: s["http-listen"] ?? (acmeMode ? acmeDefaults.httpListen : undefined)
      }
      : undefined
    const metrics = s["metrics-listen"]
    const candidate = {
      listen: acmeMode ? s["https-listen"] ?? acmeDefaults.httpsListen : s.listen ?? defaults.listen,
      tls: s["tls-cert"] !== undefined || s["tls-key"] !== undefined
        ? { certFile: s["tls-cert"], keyFile: s["tls-key"] }
        : undefined,
      metricsListen: metrics === "off" ? undefined : metrics ?? defaults.metricsListen,
      maxConnections: s["max-connections"] ?? defaults.maxConnections,
      maxConnectionsPerIp: s["max-connections-per-ip"] ?? defaults.maxConnectionsPerIp,
      trustXForwardedFor: s["trust-x-forwarded-for"] ?? defaults.trustXForwardedFor,
      proxyProtocol: s["proxy-protocol"] ?? defaults.proxyProtocol,
      acme,
      gracePeriod: s["grace-period"] ?? defaults.gracePeriod,
      heartbeatInterval: s["heartbeat-interval"] ?? defaults.heartbeatInterval,
      heartbeatTimeout: s["heartbeat-timeout"] ?? defaults.heartbeatTimeout,
      probeTimeout: s["probe-timeout"] ?? defaults.probeTimeout,
      writeTimeout: s["write-timeout"] ?? defaults.writeTimeout,
      messageTimeout: s["message-timeout"] ?? defaults.messageTimeout,
      handshakeTimeout: s["handshake-timeout"] ?? defaults.handshakeTimeout,
      closeTimeout: s["close-timeout"] ?? defaults.closeTimeout,
      maxFrameBytes: s["max-frame-bytes"] ?? defaults.maxFrameBytes,
      maxPhonesPerServer: s["max-phones-per-server"] ?? defaults.maxPhonesPerServer,
      phoneOutboxBytes: s["phone-outbox-bytes"] ?? defaults.phoneOutboxBytes,
      maxBufferedBytes: s["max-buffered-bytes"] ?? defaults.maxBufferedBytes,
      rateLimitBurst: s["rate-limit-burst"] ?? defaults.rateLimitBurst,
      rateLimitRefill: s["rate-limit-refill"] ?? defaults.rateLimitRefill,
      drainTimeout: s["drain-timeout"] ?? defaults.drainTimeout,
      logFormat: s["log-format"] ?? defaults.logFormat,
      logLevel: s["log-level"] ?? defaults.logLevel,
      production: s.production ?? defaults.production,
      fcmCredentials,
      fcmProjectId: s["fcm-project-id"] ?? defaults.fcmProjectId,
      fcmEndpoint: s["fcm-endpoint"] ?? defaults.fcmEndpoint,
      pushBurst: s["push-burst"] ?? defaults.pushBurst,
      pushRefill: s["push-refill"] ?? defaults.pushRefill,
      pushMaxInFlight: s["push-max-in-flight"] ?? defaults.pushMaxInFlight,
      cluster: redisUrl === undefined ? undefined : {
        redisUrl,
        nodeId: s["node-id"] ?? randomNodeId(),
        prefix: s["cluster-prefix"] ?? clusterDefaults.prefix,
        leaseTtl: s["lease-ttl"] ?? clusterDefaults.leaseTtl
      }
    }
    const context = { acme: acmeMode, credentialsFile: s["fcm-credentials-file"] !== undefined }
    const nameField: Namer = (path) => names.nameOf(keyOfField(path, context) as SettingKey)
    const config = yield* validateRelayConfig(candidate, nameField)
    if (config.production) {
      yield* checkProduction({
        label: names.productionLabel,
        listenHint: names.listenHint,
        explicitListen: s.listen !== undefined || acmeMode
      })
    }
    return config
  })
