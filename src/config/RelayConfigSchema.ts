/**
 * `RelayConfigShape` as a `Schema`: every value rule and every cross-field rule of the relay's
 * configuration, in one place. The command line, `RelayConfig.layerConfig` and
 * `RelayConfig.make` all decode their candidate through `validateRelayConfig`, so an embedding
 * app meets exactly the refusals an operator meets.
 *
 * The command line's parsers (`Settings.ts`, `Units.ts`) check syntax first and quote what was
 * typed; the rules here check values, whatever their source. Messages refer to other settings
 * with `field(path)` (`Refusal.ts`), quote input only through `show`, and never quote a
 * credential.
 */
import { KeyObject } from "node:crypto"
import { isIPv4, isIPv6 } from "node:net"
import * as Path from "node:path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { checkServiceUrl, parseFcmEndpoint, parseProjectId } from "../push/ServiceAccount.ts"
import type { FcmCredentials } from "../push/ServiceAccount.ts"
import type { BootRefusal, Namer } from "./Refusal.ts"
import { redisUrlProblem } from "./RedisUrl.ts"
import type { RedisUrl } from "./RedisUrl.ts"
import { field, refusalFromIssue } from "./Refusal.ts"
import { LOG_FORMATS, LOG_LEVELS } from "./RelayConfigShape.ts"
import type { AcmeSettings, ClusterSettings, ListenAddress, LogFormat, LogLevelName, RelayConfigShape } from "./RelayConfigShape.ts"
import { formatListen, isHostName, isLoopbackLiteral, MAX_DOMAINS, MAX_DURATION_MILLIS, parseDomains, show } from "./Units.ts"

/**
 * What one outbox item costs besides its frame (SPEC §4.3): `Outbox.ts`'s `ITEM_OVERHEAD`, which
 * config cannot import (the outbox depends on config); a test keeps the two equal.
 */
export const OUTBOX_ITEM_COST = 64

type Same<A, B> = [A] extends [B] ? [B] extends [A] ? true : false : false

/** A check whose failure is the returned reason (`undefined` passes). */
const rule = <T>(reason: (value: T) => string | undefined) => Schema.makeFilter<T>((value) => reason(value))

const fromParser = <T>(parse: (value: T) => Result.Result<unknown, string>) =>
  rule<T>((value) => {
    const parsed = parse(value)
    return Result.isFailure(parsed) ? parsed.failure : undefined
  })

const count = (min: number) =>
  Schema.Number.check(rule((n) =>
    !Number.isSafeInteger(n) ? "must be a whole number" : n < min ? `must be at least ${min}` : undefined
  ))

const interval = (zeroAllowed: boolean) =>
  Schema.Duration.check(rule((d) => {
    const millis = Duration.toMillis(d)
    if (Number.isNaN(millis) || millis < 0) return "must not be negative"
    if (millis > MAX_DURATION_MILLIS) return "is longer than 24h"
    return !zeroAllowed && millis === 0 ? "must be longer than 0" : undefined
  }))

const FilePath = Schema.String.check(rule((s) => s === "" ? "must be a file path, not empty" : undefined))

const AbsolutePath = FilePath.check(rule((s) => Path.isAbsolute(s) ? undefined : `${show(s)} is not an absolute path`))

/** `""` is every interface: how ACME mode's `:443`/`:80` arrive, and what `make` may ask for. */
const Host = Schema.String.check(rule((h) =>
  h === "" || isIPv4(h) || isIPv6(h) || isHostName(h) ? undefined : `${show(h)} is not an IP literal or host name`
))

/**
 * 0 — the kernel's choice — is accepted here, for a test or an app that reads the bound address
 * back; the command line refuses it (`parsePort`): an operator must say where.
 */
const Port = Schema.Number.check(rule((p) =>
  Number.isInteger(p) && p >= 0 && p <= 65_535 ? undefined : `${p} is out of range 0..65535`
))

const Listen = Schema.Struct({ host: Host, port: Port })

const MetricsListen = Listen.check(rule((a) =>
  isLoopbackLiteral(a.host)
    ? undefined
    : `${show(formatListen(a))} is not a loopback IP literal (use 127.0.0.1:9090 or [::1]:9090, or "" to disable)`
))

/** Written once in its normal form: lower case, no trailing dot, a DNS name. */
const DnsName = Schema.String.check(rule((name) => {
  const parsed = parseDomains(name)
  if (Result.isFailure(parsed)) return parsed.failure
  return parsed.success.length === 1 && parsed.success[0] === name
    ? undefined
    : `${show(name)} is not one lower-case DNS name without a trailing dot`
}))

const Domains = Schema.Array(DnsName).check(rule((names) => {
  if (names.length === 0) return "must name at least one domain"
  if (names.length > MAX_DOMAINS) return `${names.length} names, at most ${MAX_DOMAINS}`
  const twice = names.find((name, i) => names.indexOf(name) !== i)
  return twice === undefined ? undefined : `${show(twice)} is listed twice`
}))

const HttpsUrl = Schema.String.check(rule((raw) =>
  !URL.canParse(raw)
    ? `${show(raw)} is not a URL`
    : new URL(raw).protocol === "https:"
    ? undefined
    : `${show(raw)} is not an https:// URL`
))

const Email = Schema.String.check(rule((raw) =>
  /^[^\s@,<>]+@[^\s@,<>]+$/.test(raw) ? undefined : `${show(raw)} is not an email address`
))

/** Not a string to quote: any problem is the one fixed reason (`ServiceAccount.ts`). */
const isFcmCredentials = (u: unknown): u is FcmCredentials => {
  if (typeof u !== "object" || u === null) return false
  const c = u as Partial<Record<keyof FcmCredentials, unknown>>
  return typeof c.clientEmail === "string" && c.clientEmail !== "" &&
    c.privateKey instanceof KeyObject && c.privateKey.type === "private" && c.privateKey.asymmetricKeyType === "rsa" &&
    (c.privateKeyId === undefined || typeof c.privateKeyId === "string") &&
    typeof c.tokenUri === "string" && Result.isSuccess(checkServiceUrl(c.tokenUri))
}
const FcmCredentialsSchema = Schema.declare(isFcmCredentials, {
  expected: "a service-account key from parseServiceAccount (value withheld)"
})

const FcmEndpoint = Schema.String.check(rule((raw) => {
  const parsed = parseFcmEndpoint(raw)
  if (Result.isFailure(parsed)) return parsed.failure
  return parsed.success === raw ? undefined : `${show(raw)} is not written as ${show(parsed.success)}`
}))

const oneOf = <A extends string>(allowed: ReadonlyArray<A>) =>
  Schema.String.check(rule((s) => allowed.includes(s as A) ? undefined : `${show(s)} is not one of ${allowed.join(", ")}`))
    .pipe(Schema.refine((s): s is A => allowed.includes(s as A)))

/** Both files or neither: a candidate may carry one, and is refused for it. */
const Tls = Schema.Struct({ certFile: Schema.optional(FilePath), keyFile: Schema.optional(FilePath) })
  .check(rule((t) =>
    t.certFile !== undefined && t.keyFile === undefined
      ? `${field("tls.certFile")} is set without ${field("tls.keyFile")} (give both or neither)`
      : t.certFile === undefined && t.keyFile !== undefined
      ? `${field("tls.keyFile")} is set without ${field("tls.certFile")} (give both or neither)`
      : t.certFile === undefined
      ? `${field("tls.certFile")} and ${field("tls.keyFile")} are both missing (give both, or no tls at all)`
      : undefined
  ))
  .pipe(Schema.refine((t): t is { readonly certFile: string; readonly keyFile: string } =>
    t.certFile !== undefined && t.keyFile !== undefined
  ))

/** ACME settings need the names to get certificates for; a candidate may lack them, and is refused. */
const Acme = Schema.Struct({
  domains: Schema.optional(Domains),
  directoryUrl: Schema.optional(HttpsUrl),
  email: Schema.optional(Email),
  caFile: Schema.optional(FilePath),
  certCache: Schema.optional(AbsolutePath),
  httpListen: Schema.optional(Listen)
})
  .check(rule((a) => {
    const given = (["directoryUrl", "email", "caFile", "certCache", "httpListen"] as const).filter((k) => a[k] !== undefined)
    if (a.domains === undefined) {
      return `${field(`acme.${given[0] ?? "domains"}`)} needs ${field("acme.domains")} (ACME mode)`
    }
    const missing = (["directoryUrl", "certCache", "httpListen"] as const).find((k) => a[k] === undefined)
    return missing === undefined ? undefined : `${field(`acme.${missing}`)} is missing (ACME mode needs it)`
  }))
  .pipe(Schema.refine((a): a is AcmeSettings =>
    a.domains !== undefined && a.directoryUrl !== undefined && a.certCache !== undefined && a.httpListen !== undefined
  ))

/** A `Redacted` URL; a refusal describes it without its password (`RedisUrl.ts`). */
const RedisUrlSchema = Schema.declare(
  (u: unknown): u is RedisUrl => Redacted.isRedacted(u) && typeof Redacted.value(u) === "string",
  { expected: "a Redacted redis:// URL (value withheld)" }
).check(rule((url) => redisUrlProblem(Redacted.value(url))))

/** Shortest lease: below it a renewal (every third) would have less time than one Redis call's deadline. */
export const MIN_LEASE_TTL_MILLIS = 3_000

const Cluster = Schema.Struct({
  redisUrl: RedisUrlSchema,
  nodeId: Schema.String.check(rule((id) =>
    /^[a-z0-9-]{1,32}$/.test(id) ? undefined : `${show(id)} is not 1 to 32 of a-z, 0-9 and -`
  )),
  prefix: Schema.String.check(rule((p) =>
    /^[A-Za-z0-9._-]{1,64}$/.test(p) ? undefined : `${show(p)} is not 1 to 64 of A-Z, a-z, 0-9, ., _ and -`
  )),
  leaseTtl: interval(false).check(rule((d) =>
    Duration.toMillis(d) < MIN_LEASE_TTL_MILLIS ? `must be at least ${MIN_LEASE_TTL_MILLIS / 1000}s` : undefined
  ))
})

const sameCluster: Same<typeof Cluster.Type, ClusterSettings> = true
void sameCluster

const Fields = Schema.Struct({
  listen: Listen,
  tls: Schema.UndefinedOr(Tls),
  metricsListen: Schema.UndefinedOr(MetricsListen),
  maxConnections: count(1),
  maxConnectionsPerIp: count(0),
  trustXForwardedFor: Schema.Boolean,
  proxyProtocol: Schema.Boolean,
  acme: Schema.UndefinedOr(Acme),
  gracePeriod: interval(true),
  heartbeatInterval: interval(false),
  heartbeatTimeout: interval(false),
  probeTimeout: interval(false),
  writeTimeout: interval(false),
  messageTimeout: interval(false),
  handshakeTimeout: interval(false),
  closeTimeout: interval(false),
  maxFrameBytes: count(1),
  maxPhonesPerServer: count(1),
  phoneOutboxBytes: count(1),
  maxBufferedBytes: count(1),
  rateLimitBurst: count(0),
  rateLimitRefill: interval(false),
  drainTimeout: interval(true),
  logFormat: oneOf<LogFormat>(LOG_FORMATS),
  logLevel: oneOf<LogLevelName>(LOG_LEVELS),
  production: Schema.Boolean,
  fcmCredentials: Schema.UndefinedOr(FcmCredentialsSchema),
  fcmProjectId: Schema.String.check(fromParser(parseProjectId)),
  fcmEndpoint: FcmEndpoint,
  pushBurst: count(1),
  pushRefill: interval(false),
  pushMaxInFlight: count(1),
  cluster: Schema.UndefinedOr(Cluster)
})

/** Whether two listeners would fight over one port: the same address, or one on every interface. */
const clash = (a: ListenAddress, b: ListenAddress, names: string): string | undefined => {
  if (a.port !== b.port || a.port === 0) return undefined
  if (a.host === b.host) return `${names} are the same address`
  const everywhere = (host: string) => host === "" || host === "0.0.0.0" || host === "::"
  return everywhere(a.host) || everywhere(b.host)
    ? `${names} overlap: both use port ${a.port}, and one binds every interface`
    : undefined
}

/** The rules between fields, in the order an operator is told about them. */
const crossField = (c: typeof Fields.Type): string | undefined => {
  if (c.acme !== undefined && c.tls !== undefined) {
    return `${field("acme.domains")} cannot be combined with ${field("tls.certFile")} (one way to serve TLS at a time)`
  }
  const listeners = c.acme === undefined
    ? undefined
    : clash(c.acme.httpListen, c.listen, `${field("acme.httpListen")} and ${field("listen")}`)
  if (listeners !== undefined) return listeners
  if (c.proxyProtocol && c.trustXForwardedFor) {
    return `${field("proxyProtocol")} and ${field("trustXForwardedFor")} are both set: two sources for the client address (use one)`
  }
  if (c.phoneOutboxBytes < c.maxFrameBytes + OUTBOX_ITEM_COST) {
    return `${field("phoneOutboxBytes")}: ${c.phoneOutboxBytes} is smaller than ${field("maxFrameBytes")} ${c.maxFrameBytes} + ${OUTBOX_ITEM_COST} (the cost of one item), so a full-size frame could never be queued`
  }
  if (c.maxBufferedBytes < c.phoneOutboxBytes) {
    return `${field("maxBufferedBytes")}: ${c.maxBufferedBytes} is smaller than ${field("phoneOutboxBytes")} ${c.phoneOutboxBytes}, so no outbox could ever fill`
  }
  if (c.metricsListen !== undefined) {
    return clash(c.metricsListen, c.listen, `${field("metricsListen")} and ${field("listen")}`) ??
      (c.acme === undefined ? undefined : clash(c.metricsListen, c.acme.httpListen, `${field("metricsListen")} and ${field("acme.httpListen")}`))
  }
  return undefined
}

export const RelayConfigSchema = Fields.check(rule(crossField))

// The schema decodes to exactly the service's shape, in both directions.
const sameShape: Same<typeof RelayConfigSchema.Type, RelayConfigShape> = true
void sameShape

/** `candidate` (any source) as a `RelayConfigShape`, or the one-line refusal of its first problem. */
export const validateRelayConfig = (candidate: unknown, name: Namer): Effect.Effect<RelayConfigShape, BootRefusal> =>
  Schema.decodeUnknownEffect(RelayConfigSchema)(candidate).pipe(
    Effect.mapError((error) => refusalFromIssue(error.issue, name))
  )
