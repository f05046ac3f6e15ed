/**
 * Command line and environment → what the process should do (SPEC §9).
 *
 * `parseArgs` tokenises; the values are then read through one `ConfigProvider`: the flags
 * (keyed by flag name) layered over the environment (`PYRYCODE_RELAY_<FLAG>` via `nested` +
 * `constantCase`), so a flag wins over its variable and a variable over the built-in default.
 * From there the path is the one `RelayConfig.layerConfig` takes (`Settings.ts`, `Assemble.ts`,
 * `RelayConfigSchema.ts`). Every failure is a `BootRefusal` whose message is one line naming the
 * flag or variable that caused it; `main.ts` prints it and exits 2 before binding anything.
 *
 * Why this is not `effect/cli`: docs/decisions.md ("Configuration").
 */
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import type * as Result from "effect/Result"
import * as Os from "node:os"
import { readProcStatus } from "../edge/Capabilities.ts"
import { parseArgs } from "./Args.ts"
import { settle } from "./Assemble.ts"
import { ENV_PREFIX, envName, flagByName, PRODUCTION, settingKeys } from "./Flags.ts"
import { BootProcess } from "./Production.ts"
import { BootRefusal } from "./Refusal.ts"
import type { RelayConfigShape } from "./RelayConfigShape.ts"
import { readSettings } from "./Settings.ts"

export { parseArgs } from "./Args.ts"
export type { ParsedArgs } from "./Args.ts"
export { ENV_PREFIX, envName, flags } from "./Flags.ts"
export { BootRefusal } from "./Refusal.ts"
export { usage } from "./Usage.ts"
export { version } from "./Version.ts"

export type CliOutcome =
  | { readonly _tag: "Run"; readonly config: RelayConfigShape }
  | { readonly _tag: "Help" }
  | { readonly _tag: "Version" }

const knownEnv = new Set(settingKeys.map(envName))

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

    const provider = ConfigProvider.orElse(
      ConfigProvider.fromUnknown(args.flags, { preserveEmptyStrings: true }),
      ConfigProvider.fromEnvRecord({ ...env }, { preserveEmptyStrings: true }).pipe(
        ConfigProvider.nested(ENV_PREFIX),
        ConfigProvider.constantCase
      )
    )
    // A setting is named as it was given; one that was not given, by its flag (or, for the
    // environment-only ones, its variable).
    const nameOf = (key: string) =>
      Object.hasOwn(args.flags, key)
        ? `--${key}`
        : env[envName(key)] !== undefined || !flagByName.has(key)
        ? envName(key)
        : `--${key}`
    const settings = yield* readSettings(provider, nameOf)
    const home = env.HOME !== undefined && env.HOME !== "" ? env.HOME : Os.homedir()
    const config = yield* settle(settings, {
      nameOf,
      productionLabel: `${envName(PRODUCTION)}=1`,
      listenHint: `--listen (or ${envName("listen")})`
    }, home)
    return { _tag: "Run", config } as const
  }).pipe(Effect.provideService(BootProcess, { uid, procStatus }))
