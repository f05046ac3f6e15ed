/**
 * The CLI entry (`npm start -- <flags>`): config → listeners → serve until SIGTERM/SIGINT, then
 * drain and exit 0. Boot refusals exit 2 before anything binds; a listener that cannot bind
 * exits 1.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { loadRelayConfig, usage } from "./config/Cli.ts"
import { RelayConfig } from "./config/RelayConfig.ts"
import { version } from "./config/Version.ts"
import { exposedGc, MinorGc } from "./node/GcHint.ts"
import * as RelayLogger from "./observability/RelayLogger.ts"
import * as Relay from "./Relay.ts"

const loaded = Effect.runSyncExit(loadRelayConfig(process.argv.slice(2), process.env))
if (Exit.isFailure(loaded)) {
  const refusal = loaded.cause.reasons.find(Cause.isFailReason)?.error
  process.stderr.write(`pyrycode-relay: ${refusal?.message ?? Cause.pretty(loaded.cause)}\n`)
  process.exit(2)
}
const outcome = loaded.value
if (outcome._tag === "Help") {
  process.stdout.write(usage + "\n")
  process.exit(0)
}
if (outcome._tag === "Version") {
  process.stdout.write(version + "\n")
  process.exit(0)
}
const config = outcome.config

const program = Layer.launch(
  Relay.layer.pipe(
    Layer.provide(Layer.succeed(RelayConfig, config)),
    Layer.provide(RelayLogger.layer({ format: config.logFormat, level: config.logLevel })),
    // The service opts in to the gc hint (`npm start` runs Node with `--expose-gc`); a library
    // user's relay never calls `gc` unless its host provides `MinorGc` too.
    Layer.provide(Layer.succeed(MinorGc, exposedGc()))
  )
).pipe(
  Effect.catchTags({
    ListenError: (error) => Effect.fail(error.message),
    MetricsListenError: (error) => Effect.fail(`metrics listener: ${error.message}`),
    WsInternalsChanged: (error) => Effect.fail(error.message),
    CertificateCacheError: (error) => Effect.fail(error.message),
    AcmeCaFileError: (error) => Effect.fail(error.message)
  })
)

NodeRuntime.runMain(program, {
  disableErrorReporting: true,
  teardown: (exit, onExit) => {
    if (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)) return onExit(0)
    const message = exit.cause.reasons.find(Cause.isFailReason)?.error ?? Cause.pretty(exit.cause)
    process.stderr.write(`pyrycode-relay: ${String(message)}\n`)
    onExit(1)
  }
})
