/**
 * The `RelayConfig` service (SPEC §9, §12) and its three constructors, which all refuse what the
 * command line refuses (`RelayConfigSchema.ts`):
 *
 * * `make` / `layerFromValues`: from values in code, anything not given at its default;
 * * `layerConfig`: from the ambient `ConfigProvider`, keyed by flag name (`grace-period`),
 *   under an optional prefix;
 * * the command line (`Cli.ts`, `relayConfigLayer`): flags over `PYRYCODE_RELAY_*` variables.
 */
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Os from "node:os"
import { settle } from "./Assemble.ts"
import { checkProduction } from "./Production.ts"
import type { BootRefusal } from "./Refusal.ts"
import { fieldNamer } from "./Refusal.ts"
import { RelayConfigSchema, validateRelayConfig } from "./RelayConfigSchema.ts"
import { defaults } from "./RelayConfigShape.ts"
import type { RelayConfigShape } from "./RelayConfigShape.ts"
import { readSettings } from "./Settings.ts"

export { acmeDefaults, defaults, LETS_ENCRYPT_DIRECTORY, LOG_FORMATS, LOG_LEVELS } from "./RelayConfigShape.ts"
export type { AcmeSettings, ListenAddress, LogFormat, LogLevelName, RelayConfigShape } from "./RelayConfigShape.ts"

/** `values` over the defaults, checked; refusals name fields as written in code (`acme.httpListen`). */
const fromValues = (values: Partial<RelayConfigShape>): Effect.Effect<RelayConfigShape, BootRefusal> =>
  Effect.gen(function*() {
    const config = yield* validateRelayConfig({ ...defaults, ...values }, fieldNamer)
    if (config.production) {
      yield* checkProduction({
        label: "production",
        listenHint: "listen (or acme)",
        explicitListen: values.listen !== undefined || values.acme !== undefined
      })
    }
    return config
  })

/** The ambient provider's settings under `prefix`; refusals name keys as `prefix.key`. */
const fromConfigProvider = (prefix: string | ReadonlyArray<string> = []): Effect.Effect<RelayConfigShape, BootRefusal> =>
  Effect.gen(function*() {
    const path = typeof prefix === "string" ? [prefix] : prefix
    const ambient = yield* ConfigProvider.ConfigProvider
    const provider = path.length === 0 ? ambient : ConfigProvider.nested(ambient, path)
    const nameOf = (key: string) => [...path, key].join(".")
    const settings = yield* readSettings(provider, nameOf)
    return yield* settle(settings, {
      nameOf,
      productionLabel: `${nameOf("production")}=1`,
      listenHint: nameOf("listen")
    }, Os.homedir())
  })

export class RelayConfig extends Context.Service<RelayConfig, RelayConfigShape>()("pyrycode-relay/RelayConfig") {
  /** Every value and cross-field rule; what `make`, `layerConfig` and the command line decode with. */
  static readonly schema = RelayConfigSchema

  /** From values; anything not given takes its SPEC §9 default. Refused like the command line. */
  static readonly make = (values: Partial<RelayConfigShape> = {}): Effect.Effect<RelayConfigShape, BootRefusal> =>
    fromValues(values)

  static readonly layerFromValues = (values: Partial<RelayConfigShape> = {}): Layer.Layer<RelayConfig, BootRefusal> =>
    Layer.effect(RelayConfig, fromValues(values))

  /**
   * From the ambient `ConfigProvider`: the same settings as the command line, keyed by flag name
   * (`grace-period: "30s"`, `domain`, `production: "1"`, `fcm-credentials`), under `prefix`.
   * With `ConfigProvider.fromEnv()` piped through `ConfigProvider.constantCase`, the prefix
   * `PYRYCODE_RELAY` reads exactly the command line's variables.
   */
  static readonly layerConfig = (prefix?: string | ReadonlyArray<string>): Layer.Layer<RelayConfig, BootRefusal> =>
    Layer.effect(RelayConfig, fromConfigProvider(prefix))
}
