/**
 * Command line and environment → a validated `RelayConfigShape` (SPEC §9).
 *
 * `parseArgs` only tokenises: it knows which flags exist and which take a value. The values are
 * then read with Effect's `Config` through one `ConfigProvider`: the flags (keyed by flag name)
 * layered over the environment (`PYRYCODE_RELAY_<FLAG>` via `nested` + `constantCase`), so a flag
 * wins over its variable and a variable over the built-in default. Every failure is a
 * `BootRefusal` whose message is one line naming the flag or variable that caused it; `main.ts`
 * prints it and exits 2 before binding anything.
 */
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import * as Str from "effect/String"
import { capabilityRefusal, readProcStatus } from "../edge/Capabilities.ts"
import * as Os from "node:os"
import * as Path from "node:path"
import { defaults, LETS_ENCRYPT_DIRECTORY } from "./RelayConfig.ts"
import type { AcmeSettings, ListenAddress, LogFormat, LogLevelName, RelayConfigShape } from "./RelayConfig.ts"
import {
  isLoopbackLiteral,
  parseCount,
  parseDomains,
  parseListenOrEvery,
  parseDuration,
  parseListen,
  parseSize,
  show
} from "./Units.ts"
import type { Parsed } from "./Units.ts"
import {
  NOT_A_KEY,
  parseFcmEndpoint,
  parseProjectId,
  parseServiceAccount,
  readKeyFile
} from "../push/ServiceAccount.ts"
import type { FcmCredentials } from "../push/ServiceAccount.ts"

export class BootRefusal extends Schema.TaggedError<BootRefusal>()("BootRefusal", {
  message: Schema.String
}) {}

export { version } from "./Version.ts"

export const ENV_PREFIX = "PYRYCODE_RELAY"

/** `grace-period` → `PYRYCODE_RELAY_GRACE_PERIOD`. */
export const envName = (flag: string): string => `${ENV_PREFIX}_${Str.configCase(flag)}`

const PRODUCTION = "production"
/** Environment only (a secret does not belong on a command line, where `ps` shows it). */
const FCM_CREDENTIALS = "fcm-credentials"

interface FlagSpec {
  readonly name: string
  readonly boolean?: true
  /** May be given more than once; the values are joined with commas. */
  readonly repeatable?: true
  readonly default: string
  readonly meaning: string
}

/** Every flag that carries a setting, in `--help` order. `--help`/`--version` are handled apart. */
export const flags: ReadonlyArray<FlagSpec> = [
  { name: "listen", default: "127.0.0.1:8080", meaning: "public listener host:port (plain HTTP unless --tls-cert/--tls-key)" },
  { name: "tls-cert", default: "unset", meaning: "PEM certificate file: serve HTTPS on --listen (needs --tls-key)" },
  { name: "tls-key", default: "unset", meaning: "PEM private key file (needs --tls-cert)" },
  { name: "domain", repeatable: true, default: "unset", meaning: "ACME mode: certificates for this DNS name (repeat, or comma-separate, for more)" },
  { name: "acme-directory", default: "Let's Encrypt production", meaning: "ACME directory URL (staging, or a private CA)" },
  { name: "acme-email", default: "unset", meaning: "ACME account contact address" },
  { name: "acme-ca-file", default: "unset", meaning: "extra PEM CA bundle trusted when talking to the ACME directory" },
  { name: "cert-cache", default: "$HOME/.pyrycode-relay/certs", meaning: "ACME account key, certificates and keys" },
  { name: "https-listen", default: ":443", meaning: "ACME mode: the TLS listener (serves what --listen serves)" },
  { name: "http-listen", default: ":80", meaning: "ACME mode: HTTP-01 challenges and /readyz only" },
  { name: "metrics-listen", default: "127.0.0.1:9090", meaning: "/metrics listener: loopback IP literal with port; \"\" disables" },
  { name: "max-connections", default: "1000", meaning: "global WebSocket connection cap (> 0)" },
  { name: "max-connections-per-ip", default: "64", meaning: "live WebSocket connections per source IP; 0 disables" },
  { name: "trust-x-forwarded-for", boolean: true, default: "false", meaning: "take the source IP from the left-most X-Forwarded-For entry" },
  { name: "proxy-protocol", boolean: true, default: "false", meaning: "require a PROXY protocol v2 header on every public connection; its source is the client" },
  { name: "grace-period", default: "30s", meaning: "how long a disconnected binary's server-id is kept for it" },
  { name: "heartbeat-interval", default: "30s", meaning: "ping period on every connection" },
  { name: "heartbeat-timeout", default: "30s", meaning: "pong deadline before closing 1011" },
  { name: "probe-timeout", default: "10s", meaning: "conflict liveness probe deadline" },
  { name: "write-timeout", default: "10s", meaning: "deadline for one write to a peer" },
  { name: "message-timeout", default: "30s", meaning: "a started message must complete within this" },
  { name: "handshake-timeout", default: "5s", meaning: "HTTP request head deadline" },
  { name: "close-timeout", default: "5s", meaning: "how long a peer gets to answer our close frame" },
  { name: "max-frame-bytes", default: "262144", meaning: "largest inbound message" },
  { name: "max-phones-per-server", default: "16", meaning: "phones per server-id" },
  { name: "phone-outbox-bytes", default: "4194304", meaning: "per-phone outbound queue bound" },
  { name: "max-buffered-bytes", default: "268435456", meaning: "relay-wide outbound buffering bound" },
  { name: "rate-limit-burst", default: "20", meaning: "per-IP upgrade token bucket size; 0 disables rate limiting" },
  { name: "rate-limit-refill", default: "6s", meaning: "one token back every this long" },
  { name: "drain-timeout", default: "10s", meaning: "shutdown wait for connections to finish" },
  { name: "log-format", default: "json", meaning: "json or pretty" },
  { name: "log-level", default: "info", meaning: "trace, debug, info, warn, error or fatal" },
  { name: "fcm-credentials-file", default: "unset", meaning: "push wake: Google service-account JSON key file (or PYRYCODE_RELAY_FCM_CREDENTIALS)" },
  { name: "fcm-project-id", default: "pyrycode-mobile", meaning: "push wake: Firebase project id" },
  { name: "fcm-endpoint", default: "https://fcm.googleapis.com", meaning: "push wake: FCM base URL (http:// only to loopback)" },
  { name: "push-burst", default: "6", meaning: "push wakes a server-id may send at once (> 0)" },
  { name: "push-refill", default: "10s", meaning: "one push wake back every this long" },
  { name: "push-max-in-flight", default: "32", meaning: "push sends in flight relay-wide (> 0)" }
]

const flagByName = new Map(flags.map((f) => [f.name, f]))

export const usage: string = [
  "Usage: pyrycode-relay [flags]",
  "",
  "Relays WebSocket traffic between pyrycode phones (/v1/client) and their pyry binary (/v1/server).",
  "",
  "Flags (--flag value or --flag=value):",
  ...flags.map((f) => {
    const left = `  --${f.name}${f.boolean === true ? "" : " <value>"}`
    return `${left.padEnd(36)}${f.meaning} (default ${f.default})`
  }),
  `${"  --version".padEnd(36)}print the version and exit`,
  `${"  -h, --help".padEnd(36)}print this help and exit`,
  "",
  "Durations: 500ms, 30s, 2m, 1h or sums such as 1m30s. Sizes: bytes, or 256KiB, 4MiB.",
  "",
  "Environment: every flag can also be set as PYRYCODE_RELAY_<FLAG> in upper snake case",
  "(--grace-period -> PYRYCODE_RELAY_GRACE_PERIOD; booleans take true or false). A flag wins over",
  "its variable. Unknown PYRYCODE_RELAY_* variables are refused.",
  "  PYRYCODE_RELAY_PRODUCTION=1   refuse to run as root, require an explicit --listen, and refuse any",
  "                                effective capability other than CAP_NET_BIND_SERVICE (Linux)",
  "  PYRYCODE_RELAY_FCM_CREDENTIALS  Google service-account JSON key: turns push wake on (docs/push.md)",
  "",
  "Invalid configuration exits 2 before anything is bound."
].join("\n")

// --- argv ------------------------------------------------------------------------------------

export type ParsedArgs =
  | { readonly _tag: "Help" }
  | { readonly _tag: "Version" }
  | { readonly _tag: "Flags"; readonly flags: Readonly<Record<string, string>> }

/**
 * Tokenises `argv`: `--flag value`, `--flag=value`, bare boolean `--trust-x-forwarded-for` (or
 * `=true`/`=false`). Values are kept as text for the `Config` step. `--help`/`-h` and `--version`
 * win wherever they appear, so help is reachable even from a broken command line; otherwise the
 * first problem (unknown flag, missing value, repeated flag, stray argument) is refused.
 */
export const parseArgs = (argv: ReadonlyArray<string>): Effect.Effect<ParsedArgs, BootRefusal> => {
  const values: Record<string, string> = {}
  let help = false
  let versionWanted = false
  let problem: string | undefined
  const refuse = (message: string) => {
    problem ??= message
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? ""
    if (arg === "-h" || arg === "--help") help = true
    else if (arg === "--version") versionWanted = true
    else if (!arg.startsWith("--")) refuse(`unexpected argument ${show(arg)} (flags start with --; see --help)`)
    else {
      const eq = arg.indexOf("=")
      const name = arg.slice(2, eq === -1 ? undefined : eq)
      const spec = flagByName.get(name)
      if (spec === undefined) {
        refuse(
          name === "help" || name === "version"
            ? `--${name} takes no value`
            : `unknown flag ${show(`--${name}`)} (see --help)`
        )
        continue
      }
      let value: string
      if (eq !== -1) value = arg.slice(eq + 1)
      else if (spec.boolean === true) value = "true"
      else {
        const next = argv[i + 1]
        if (next === undefined || next.startsWith("--")) {
          refuse(`--${name}: needs a value`)
          continue
        }
        value = next
        i++
      }
      if (!Object.hasOwn(values, name)) values[name] = value
      else if (spec.repeatable === true) values[name] = `${values[name]},${value}`
      else refuse(`--${name}: given more than once`)
    }
  }
  if (help) return Effect.succeed({ _tag: "Help" })
  if (versionWanted) return Effect.succeed({ _tag: "Version" })
  if (problem !== undefined) return Effect.fail(new BootRefusal({ message: problem }))
  return Effect.succeed({ _tag: "Flags", flags: values })
}

// --- Config description ----------------------------------------------------------------------

const invalid = (message: string): Config.ConfigError =>
  new Config.ConfigError(new Schema.SchemaError(new SchemaIssue.InvalidValue({ message })))

const positive = (d: Duration.Duration): Parsed<Duration.Duration> =>
  Duration.isZero(d) ? Result.fail("must be longer than 0") : Result.succeed(d)

const atLeast = (min: number) => (n: number): Parsed<number> =>
  n >= min ? Result.succeed(n) : Result.fail(`must be at least ${min}`)

const then = <A, B>(first: (raw: string) => Parsed<A>, second: (a: A) => Parsed<B>) => (raw: string): Parsed<B> =>
  Result.flatMap(first(raw), second)

const oneOf = <A extends string>(allowed: ReadonlyArray<A>) => (raw: string): Parsed<A> => {
  const lower = raw.toLowerCase()
  const found = allowed.find((a) => a === lower)
  return found !== undefined
    ? Result.succeed(found)
    : Result.fail(`${show(raw)} is not one of ${allowed.join(", ")}`)
}

const bool = (raw: string): Parsed<boolean> =>
  raw === "true" ? Result.succeed(true) : raw === "false" ? Result.succeed(false) : Result.fail(`${show(raw)} is not true or false`)

const serviceAccount = (raw: string): Parsed<FcmCredentials> => {
  const credentials = parseServiceAccount(raw)
  return credentials === undefined ? Result.fail(NOT_A_KEY) : Result.succeed(credentials)
}

const filePath = (raw: string): Parsed<string> =>
  raw === "" ? Result.fail("must be a file path, not empty") : Result.succeed(raw)

const httpsUrl = (raw: string): Parsed<string> => {
  if (!URL.canParse(raw)) return Result.fail(`${show(raw)} is not a URL`)
  return new URL(raw).protocol === "https:" ? Result.succeed(raw) : Result.fail(`${show(raw)} is not an https:// URL`)
}

const emailAddress = (raw: string): Parsed<string> =>
  /^[^\s@,<>]+@[^\s@,<>]+$/.test(raw) ? Result.succeed(raw) : Result.fail(`${show(raw)} is not an email address`)

const metricsAddress = (raw: string): Parsed<ListenAddress | undefined> =>
  raw === ""
    ? Result.succeed(undefined)
    : Result.flatMap(parseListen(raw), (a) =>
      isLoopbackLiteral(a.host)
        ? Result.succeed(a)
        : Result.fail(`${show(raw)} is not a loopback IP literal (use 127.0.0.1:9090 or [::1]:9090, or "" to disable)`))

/**
 * The `Config` of every field. `nameOf` says how to name a key in a refusal (`--flag` when the
 * flag was given, else its variable), because a `Config` sees values, not where they came from.
 */
export const relayConfig = (nameOf: (key: string) => string) => {
  const field = <A>(key: string, parse: (raw: string) => Parsed<A>): Config.Config<A> =>
    Config.String(key).pipe(
      Config.mapEffect((raw) =>
        Result.match(parse(raw), {
          onSuccess: Effect.succeed,
          onFailure: (reason) => Effect.fail(invalid(`${nameOf(key)}: ${reason}`))
        })
      )
    )
  const duration = (key: string, fallback: Duration.Duration, mustBePositive = true) =>
    field(key, mustBePositive ? then(parseDuration, positive) : parseDuration).pipe(Config.withDefault(fallback))
  const count = (key: string, fallback: number, min: number) =>
    field(key, then(parseCount, atLeast(min))).pipe(Config.withDefault(fallback))
  const size = (key: string, fallback: number) =>
    field(key, then(parseSize, atLeast(1))).pipe(Config.withDefault(fallback))
  return Config.all({
    listen: Config.option(field("listen", parseListen)),
    tlsCert: Config.option(field("tls-cert", filePath)),
    tlsKey: Config.option(field("tls-key", filePath)),
    metricsListen: field("metrics-listen", metricsAddress).pipe(Config.withDefault(defaults.metricsListen)),
    maxConnections: count("max-connections", defaults.maxConnections, 1),
    maxConnectionsPerIp: count("max-connections-per-ip", defaults.maxConnectionsPerIp, 0),
    trustXForwardedFor: field("trust-x-forwarded-for", bool).pipe(Config.withDefault(defaults.trustXForwardedFor)),
    proxyProtocol: field("proxy-protocol", bool).pipe(Config.withDefault(defaults.proxyProtocol)),
    domain: Config.option(field("domain", parseDomains)),
    acmeDirectory: Config.option(field("acme-directory", httpsUrl)),
    acmeEmail: Config.option(field("acme-email", emailAddress)),
    acmeCaFile: Config.option(field("acme-ca-file", filePath)),
    certCache: Config.option(field("cert-cache", filePath)),
    httpsListen: Config.option(field("https-listen", parseListenOrEvery)),
    httpListen: Config.option(field("http-listen", parseListenOrEvery)),
    gracePeriod: duration("grace-period", defaults.gracePeriod, false),
    heartbeatInterval: duration("heartbeat-interval", defaults.heartbeatInterval),
    heartbeatTimeout: duration("heartbeat-timeout", defaults.heartbeatTimeout),
    probeTimeout: duration("probe-timeout", defaults.probeTimeout),
    writeTimeout: duration("write-timeout", defaults.writeTimeout),
    messageTimeout: duration("message-timeout", defaults.messageTimeout),
    handshakeTimeout: duration("handshake-timeout", defaults.handshakeTimeout),
    closeTimeout: duration("close-timeout", defaults.closeTimeout),
    maxFrameBytes: size("max-frame-bytes", defaults.maxFrameBytes),
    maxPhonesPerServer: count("max-phones-per-server", defaults.maxPhonesPerServer, 1),
    phoneOutboxBytes: size("phone-outbox-bytes", defaults.phoneOutboxBytes),
    maxBufferedBytes: size("max-buffered-bytes", defaults.maxBufferedBytes),
    rateLimitBurst: count("rate-limit-burst", defaults.rateLimitBurst, 0),
    rateLimitRefill: duration("rate-limit-refill", defaults.rateLimitRefill),
    drainTimeout: duration("drain-timeout", defaults.drainTimeout, false),
    logFormat: field("log-format", oneOf<LogFormat>(["json", "pretty"])).pipe(Config.withDefault(defaults.logFormat)),
    logLevel: field("log-level", oneOf<LogLevelName>(["trace", "debug", "info", "warn", "error", "fatal"])).pipe(
      Config.withDefault(defaults.logLevel)
    ),
    // Never echoed: the refusal only says what the value must be.
    production: field(PRODUCTION, (raw) => raw === "1" ? Result.succeed(true) : Result.fail("must be unset or exactly 1"))
      .pipe(Config.withDefault(false)),
    // A secret: any problem with it is the one fixed reason, never a part of the value.
    fcmCredentials: Config.option(field(FCM_CREDENTIALS, serviceAccount)),
    fcmCredentialsFile: Config.option(field("fcm-credentials-file", filePath)),
    fcmProjectId: field("fcm-project-id", parseProjectId).pipe(Config.withDefault(defaults.fcmProjectId)),
    fcmEndpoint: field("fcm-endpoint", parseFcmEndpoint).pipe(Config.withDefault(defaults.fcmEndpoint)),
    pushBurst: count("push-burst", defaults.pushBurst, 1),
    pushRefill: duration("push-refill", defaults.pushRefill),
    pushMaxInFlight: count("push-max-in-flight", defaults.pushMaxInFlight, 1)
  })
}

// --- loading ---------------------------------------------------------------------------------

export type CliOutcome =
  | { readonly _tag: "Run"; readonly config: RelayConfigShape }
  | { readonly _tag: "Help" }
  | { readonly _tag: "Version" }

const knownEnv = new Set([...flags.map((f) => envName(f.name)), envName(PRODUCTION), envName(FCM_CREDENTIALS)])

/**
 * `argv` (without node and script) + environment → what the process should do. `uid` is the
 * effective user id (`process.getuid?.()`) and `procStatus` reads `/proc/self/status`: inputs, so
 * the production root and capability checks are testable.
 */
export const loadRelayConfig = (
  argv: ReadonlyArray<string>,
  env: Readonly<Record<string, string | undefined>>,
  uid: number | undefined = process.getuid?.(),
  procStatus: () => Result.Result<string, string> = readProcStatus
): Effect.Effect<CliOutcome, BootRefusal> =>
  Effect.gen(function*() {
    const args = yield* parseArgs(argv)
    if (args._tag !== "Flags") return args
    // A misspelt variable would otherwise be silently ignored (PYRYCODE_RELAY_PRODUCTON=1).
    const stray = Object.keys(env).filter((k) => k.startsWith(`${ENV_PREFIX}_`) && !knownEnv.has(k)).sort()[0]
    if (stray !== undefined) return yield* new BootRefusal({ message: `${stray}: unknown variable (see --help)` })

    const envRecord: Record<string, string | undefined> = { ...env }
    const provider = ConfigProvider.orElse(
      ConfigProvider.fromUnknown(args.flags, { preserveEmptyStrings: true }),
      ConfigProvider.fromEnvRecord(envRecord, { preserveEmptyStrings: true }).pipe(
        ConfigProvider.nested(ENV_PREFIX),
        ConfigProvider.constantCase
      )
    )
    const nameOf = (key: string) => Object.hasOwn(args.flags, key) ? `--${key}` : envName(key)
    const v = yield* relayConfig(nameOf).parse(provider).pipe(
      Effect.mapError((e) => new BootRefusal({ message: e.cause.message }))
    )

    const refuse = (message: string) => Effect.fail(new BootRefusal({ message }))
    if (v.tlsCert._tag !== v.tlsKey._tag) {
      return yield* v.tlsCert._tag === "Some"
        ? refuse(`${nameOf("tls-cert")} is set without ${nameOf("tls-key")} (give both or neither)`)
        : refuse(`${nameOf("tls-key")} is set without ${nameOf("tls-cert")} (give both or neither)`)
    }
    const acmeOnly = ["acme-directory", "acme-email", "acme-ca-file", "cert-cache", "https-listen", "http-listen"] as const
    let acme: AcmeSettings | undefined
    let httpsListen: ListenAddress | undefined
    if (v.domain._tag === "None") {
      const given = acmeOnly.find((key) => Object.hasOwn(args.flags, key) || env[envName(key)] !== undefined)
      if (given !== undefined) return yield* refuse(`${nameOf(given)} needs --domain (ACME mode)`)
    } else {
      // EDGE.md §1: one way to serve TLS at a time.
      if (v.tlsCert._tag === "Some" || v.tlsKey._tag === "Some") {
        const tlsFlag = nameOf(v.tlsCert._tag === "Some" ? "tls-cert" : "tls-key")
        return yield* refuse(`${nameOf("domain")} cannot be combined with ${tlsFlag} (one way to serve TLS at a time)`)
      }
      if (v.listen._tag === "Some") {
        return yield* refuse(
          `${nameOf("domain")} cannot be combined with ${nameOf("listen")} (in ACME mode the TLS listener is --https-listen)`
        )
      }
      httpsListen = Option.getOrElse(v.httpsListen, () => ({ host: "", port: 443 }))
      const httpListen = Option.getOrElse(v.httpListen, () => ({ host: "", port: 80 }))
      if (httpsListen.host === httpListen.host && httpsListen.port === httpListen.port) {
        return yield* refuse(`${nameOf("http-listen")} and ${nameOf("https-listen")} are the same address`)
      }
      const home = env.HOME !== undefined && env.HOME !== "" ? env.HOME : Os.homedir()
      acme = {
        domains: v.domain.value,
        directoryUrl: Option.getOrElse(v.acmeDirectory, () => LETS_ENCRYPT_DIRECTORY),
        email: Option.getOrUndefined(v.acmeEmail),
        caFile: Option.getOrUndefined(v.acmeCaFile),
        certCache: Path.resolve(Option.getOrElse(v.certCache, () => Path.join(home, ".pyrycode-relay", "certs"))),
        httpListen
      }
    }
    if (v.proxyProtocol && v.trustXForwardedFor) {
      return yield* refuse(
        `${nameOf("proxy-protocol")} and ${nameOf("trust-x-forwarded-for")} are both set: two sources for the client address (use one)`
      )
    }
    if (v.phoneOutboxBytes < v.maxFrameBytes) {
      return yield* refuse(
        `${nameOf("phone-outbox-bytes")}: ${v.phoneOutboxBytes} is smaller than max-frame-bytes ${v.maxFrameBytes}, so a full-size frame could never be queued`
      )
    }
    if (v.maxBufferedBytes < v.phoneOutboxBytes) {
      return yield* refuse(
        `${nameOf("max-buffered-bytes")}: ${v.maxBufferedBytes} is smaller than phone-outbox-bytes ${v.phoneOutboxBytes}`
      )
    }
    if (v.production) {
      // In ACME mode --https-listen (default :443) is the production listener.
      if (v.listen._tag === "None" && acme === undefined) {
        return yield* refuse(`${envName(PRODUCTION)}=1: --listen (or ${envName("listen")}) must be given explicitly`)
      }
      if (uid === 0) return yield* refuse(`${envName(PRODUCTION)}=1: refusing to run as root (uid 0)`)
      // EDGE.md §4: read only in production, so other platforms run without /proc.
      const capabilities = capabilityRefusal(procStatus())
      if (capabilities !== undefined) return yield* refuse(`${envName(PRODUCTION)}=1: ${capabilities}`)
    }

    let fcmCredentials = v.fcmCredentials._tag === "Some" ? v.fcmCredentials.value : undefined
    if (v.fcmCredentialsFile._tag === "Some") {
      const flag = nameOf("fcm-credentials-file")
      if (fcmCredentials !== undefined) {
        return yield* refuse(`${envName(FCM_CREDENTIALS)} and ${flag} are both set (give one)`)
      }
      const read = readKeyFile(v.fcmCredentialsFile.value)
      if ("problem" in read) return yield* refuse(`${flag}: cannot be read (${read.problem})`)
      fcmCredentials = parseServiceAccount(read.text)
      if (fcmCredentials === undefined) return yield* refuse(`${flag}: ${NOT_A_KEY}`)
    }

    const config: RelayConfigShape = {
      listen: httpsListen ?? (v.listen._tag === "Some" ? v.listen.value : defaults.listen),
      tls: v.tlsCert._tag === "Some" && v.tlsKey._tag === "Some"
        ? { certFile: v.tlsCert.value, keyFile: v.tlsKey.value }
        : undefined,
      metricsListen: v.metricsListen,
      maxConnections: v.maxConnections,
      maxConnectionsPerIp: v.maxConnectionsPerIp,
      trustXForwardedFor: v.trustXForwardedFor,
      proxyProtocol: v.proxyProtocol,
      acme,
      gracePeriod: v.gracePeriod,
      heartbeatInterval: v.heartbeatInterval,
      heartbeatTimeout: v.heartbeatTimeout,
      probeTimeout: v.probeTimeout,
      writeTimeout: v.writeTimeout,
      messageTimeout: v.messageTimeout,
      handshakeTimeout: v.handshakeTimeout,
      closeTimeout: v.closeTimeout,
      maxFrameBytes: v.maxFrameBytes,
      maxPhonesPerServer: v.maxPhonesPerServer,
      phoneOutboxBytes: v.phoneOutboxBytes,
      maxBufferedBytes: v.maxBufferedBytes,
      rateLimitBurst: v.rateLimitBurst,
      rateLimitRefill: v.rateLimitRefill,
      drainTimeout: v.drainTimeout,
      logFormat: v.logFormat,
      logLevel: v.logLevel,
      production: v.production,
      fcmCredentials,
      fcmProjectId: v.fcmProjectId,
      fcmEndpoint: v.fcmEndpoint,
      pushBurst: v.pushBurst,
      pushRefill: v.pushRefill,
      pushMaxInFlight: v.pushMaxInFlight
    }
    return { _tag: "Run", config } as const
  })
