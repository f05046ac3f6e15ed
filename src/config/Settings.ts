/**
 * Reads every setting by key (`grace-period`, `domain`, …) from a `ConfigProvider` and checks
 * its syntax: durations, sizes, counts, addresses, booleans. The command line's provider is its
 * flags over `PYRYCODE_RELAY_*` variables; `RelayConfig.layerConfig`'s is the ambient one. What a
 * value must be beyond its syntax is `RelayConfigSchema`'s to say.
 */
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import { NOT_A_KEY, parseFcmEndpoint, parseServiceAccount } from "../push/ServiceAccount.ts"
import type { FcmCredentials } from "../push/ServiceAccount.ts"
import { parseRedisUrl } from "./RedisUrl.ts"
import { BootRefusal } from "./Refusal.ts"
import { LOG_FORMATS, LOG_LEVELS } from "./RelayConfigShape.ts"
import type { ListenAddress } from "./RelayConfigShape.ts"
import type { Parsed } from "./Units.ts"
import { parseCount, parseDomains, parseDuration, parseListen, parseListenOrEvery, parseSize, show } from "./Units.ts"

const text = (raw: string): Parsed<string> => Result.succeed(raw)

const filePath = (raw: string): Parsed<string> =>
  raw === "" ? Result.fail("must be a file path, not empty") : Result.succeed(raw)

const bool = (raw: string): Parsed<boolean> =>
  raw === "true"
    ? Result.succeed(true)
    : raw === "false"
    ? Result.succeed(false)
    : Result.fail(`${show(raw)} is not true or false`)

/** Case-insensitive, so `PYRYCODE_RELAY_LOG_LEVEL=WARN` reads as `warn`. */
const oneOf = <A extends string>(allowed: ReadonlyArray<A>) => (raw: string): Parsed<A> => {
  const found = allowed.find((a) => a === raw.toLowerCase())
  return found !== undefined ? Result.succeed(found) : Result.fail(`${show(raw)} is not one of ${allowed.join(", ")}`)
}

/** `""` turns the metrics listener off. */
const metricsAddress = (raw: string): Parsed<ListenAddress | "off"> => raw === "" ? Result.succeed("off") : parseListen(raw)

/** Never echoed: the refusal only says what the value must be. */
const productionFlag = (raw: string): Parsed<boolean> =>
  raw === "1" ? Result.succeed(true) : Result.fail("must be unset or exactly 1")

/** A secret: any problem with it is the one fixed reason, never a part of the value. */
const serviceAccount = (raw: string): Parsed<FcmCredentials> => {
  const credentials = parseServiceAccount(raw)
  return credentials === undefined ? Result.fail(NOT_A_KEY) : Result.succeed(credentials)
}

/** The syntax of every setting, by key. */
const parsers = {
  "listen": parseListen,
  "tls-cert": text,
  "tls-key": text,
  "domain": parseDomains,
  "acme-directory": text,
  "acme-email": text,
  "acme-ca-file": text,
  "cert-cache": text,
  "https-listen": parseListenOrEvery,
  "http-listen": parseListenOrEvery,
  "metrics-listen": metricsAddress,
  "max-connections": parseCount,
  "max-connections-per-ip": parseCount,
  "trust-x-forwarded-for": bool,
  "proxy-protocol": bool,
  "grace-period": parseDuration,
  "heartbeat-interval": parseDuration,
  "heartbeat-timeout": parseDuration,
  "probe-timeout": parseDuration,
  "write-timeout": parseDuration,
  "message-timeout": parseDuration,
  "handshake-timeout": parseDuration,
  "close-timeout": parseDuration,
  "max-frame-bytes": parseSize,
  "max-phones-per-server": parseCount,
  "phone-outbox-bytes": parseSize,
  "max-buffered-bytes": parseSize,
  "rate-limit-burst": parseCount,
  "rate-limit-refill": parseDuration,
  "drain-timeout": parseDuration,
  "log-format": oneOf(LOG_FORMATS),
  "log-level": oneOf(LOG_LEVELS),
  "fcm-credentials-file": filePath,
  "fcm-project-id": text,
  "fcm-endpoint": parseFcmEndpoint,
  "push-burst": parseCount,
  "push-refill": parseDuration,
  "push-max-in-flight": parseCount,
  "cluster-redis": parseRedisUrl,
  "node-id": text,
  "cluster-prefix": text,
  "lease-ttl": parseDuration,
  "production": productionFlag,
  "fcm-credentials": serviceAccount
} satisfies Record<string, (raw: string) => Parsed<unknown>>

export type SettingKey = keyof typeof parsers

/** The settings that were given, each parsed; a key that was not given is absent. */
export type Settings = {
  readonly [K in SettingKey]?: ReturnType<typeof parsers[K]> extends Result.Result<infer A, string> ? A : never
}

/** In `--help` order, then the environment-only ones. */
export const settingKeysInOrder = Object.keys(parsers) as ReadonlyArray<SettingKey>

/**
 * The text at `key`, or `undefined` when it is not set. `domain` may also be a list (a JSON
 * array through `ConfigProvider.fromUnknown`); any other list is refused rather than ignored.
 */
const textAt = (
  provider: ConfigProvider.ConfigProvider,
  key: string
): Effect.Effect<string | undefined, string, never> =>
  Effect.gen(function*() {
    const node = yield* provider.load([key]).pipe(Effect.mapError((e) => `cannot be read (${e.message.split("\n")[0]})`))
    if (node === undefined || node._tag === "Value") return node?.value
    // A record with a value is how an environment holds `X` next to `X_Y`: the value is ours.
    if (node.value !== undefined || node._tag === "Record") return node.value
    if (key !== "domain") return yield* Effect.fail("must be one value, not a list")
    const names: Array<string> = []
    for (let i = 0; i < node.length; i++) {
      const item = yield* provider.load([key, i]).pipe(Effect.mapError(() => "cannot be read"))
      if (item?._tag !== "Value") return yield* Effect.fail("must be a list of names")
      names.push(item.value)
    }
    return names.join(",")
  })

/**
 * Every setting `provider` holds, parsed. The first problem is refused, naming the setting with
 * `nameOf` (the flag or variable on the command line, the key under a `ConfigProvider`).
 */
export const readSettings = (
  provider: ConfigProvider.ConfigProvider,
  nameOf: (key: SettingKey) => string
): Effect.Effect<Settings, BootRefusal> =>
  Effect.gen(function*() {
    const settings: Record<string, unknown> = {}
    for (const key of settingKeysInOrder) {
      const refuse = (reason: string) => new BootRefusal({ message: `${nameOf(key)}: ${reason}` })
      const raw = yield* textAt(provider, key).pipe(Effect.mapError(refuse))
      if (raw === undefined) continue
      const parsed: Parsed<unknown> = parsers[key](raw)
      if (Result.isFailure(parsed)) return yield* refuse(parsed.failure)
      settings[key] = parsed.success
    }
    return settings as Settings
  })
