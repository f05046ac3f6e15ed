/**
 * `PYRYCODE_RELAY_PRODUCTION=1` (SPEC §9, EDGE.md §4): production must say where it listens,
 * must not run as root, and may hold no effective capability but CAP_NET_BIND_SERVICE. These
 * are facts about the process, not values, so they run after the schema, from every source.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Result from "effect/Result"
import { capabilityRefusal, readProcStatus } from "../edge/Capabilities.ts"
import { BootRefusal } from "./Refusal.ts"

/** The process the production checks look at: a reference, so tests can be root or capable. */
export interface BootProcessShape {
  /** The effective user id (`process.getuid?.()`); `undefined` on platforms without one. */
  readonly uid: number | undefined
  /** `/proc/self/status`, or why it cannot be read. Read only in production. */
  readonly procStatus: () => Result.Result<string, string>
}

export const BootProcess = Context.Reference<BootProcessShape>("pyrycode-relay/BootProcess", {
  defaultValue: () => ({ uid: process.getuid?.(), procStatus: readProcStatus })
})

export const checkProduction = (options: {
  /** How the refusal names production mode: `PYRYCODE_RELAY_PRODUCTION=1`. */
  readonly label: string
  /** How it names the listen setting: `--listen (or PYRYCODE_RELAY_LISTEN)`. */
  readonly listenHint: string
  /** Whether the listen address (or ACME mode, whose listener is `:443`) was given. */
  readonly explicitListen: boolean
}): Effect.Effect<void, BootRefusal> =>
  Effect.gen(function*() {
    const refuse = (reason: string) => new BootRefusal({ message: `${options.label}: ${reason}` })
    if (!options.explicitListen) return yield* refuse(`${options.listenHint} must be given explicitly`)
    const proc = yield* BootProcess
    if (proc.uid === 0) return yield* refuse("refusing to run as root (uid 0)")
    const capabilities = capabilityRefusal(proc.procStatus())
    if (capabilities !== undefined) return yield* refuse(capabilities)
  })
