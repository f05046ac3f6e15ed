/**
 * Runs the command-line loader in-process, as an ordinary (non-root, capability-free) process
 * unless told otherwise, and hands back the config or the refusal line.
 */
import { assert } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import { BootRefusal, loadRelayConfig } from "../../src/config/Cli.ts"

export type Env = Record<string, string | undefined>

export const NON_ROOT = 1000

/** `/proc/self/status` of an ordinary process: no effective capabilities. */
export const NO_CAPS = (): Result.Result<string, string> => Result.succeed("Name:\tnode\nCapEff:\t0000000000000000\n")

export const configOf = (argv: ReadonlyArray<string>, env: Env = {}, uid: number | undefined = NON_ROOT, status = NO_CAPS) =>
  loadRelayConfig(argv, env, uid, status).pipe(
    Effect.flatMap((outcome) => outcome._tag === "Run" ? Effect.succeed(outcome.config) : Effect.die(outcome._tag))
  )

/** A refusal's message; also pins that it is a BootRefusal and fits on one line. */
export const oneLine = (e: unknown): string => {
  assert.instanceOf(e, BootRefusal)
  const refusal = e as BootRefusal
  assert.strictEqual(refusal._tag, "BootRefusal")
  assert.notInclude(refusal.message, "\n")
  return refusal.message
}

export const refusalOf = (argv: ReadonlyArray<string>, env: Env = {}, uid: number | undefined = NON_ROOT, status = NO_CAPS) =>
  loadRelayConfig(argv, env, uid, status).pipe(Effect.flip, Effect.map(oneLine))
