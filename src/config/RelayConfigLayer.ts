/**
 * `RelayConfig` from flags and environment, as a layer (SPEC §12). `--help`/`--version` make no
 * sense inside another program, so they are refused here like any other bad input.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { BootRefusal, loadRelayConfig } from "./Cli.ts"
import { RelayConfig } from "./RelayConfig.ts"

export const relayConfigLayer = (
  argv: ReadonlyArray<string> = [],
  env: Readonly<Record<string, string | undefined>> = process.env
): Layer.Layer<RelayConfig, BootRefusal> =>
  Layer.effect(
    RelayConfig,
    Effect.flatMap(loadRelayConfig(argv, env), (outcome) =>
      outcome._tag === "Run"
        ? Effect.succeed(outcome.config)
        : Effect.fail(new BootRefusal({ message: `--${outcome._tag.toLowerCase()} is only for the command line` })))
  )
