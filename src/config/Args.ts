/**
 * The command line's tokens (SPEC §9). Only tokenises: it knows which flags exist and which take
 * a value, and keeps every value as text for the reading step (`Settings.ts`).
 */
import * as Effect from "effect/Effect"
import { flagByName } from "./Flags.ts"
import { BootRefusal } from "./Refusal.ts"
import { show } from "./Units.ts"

export type ParsedArgs =
  | { readonly _tag: "Help" }
  | { readonly _tag: "Version" }
  | { readonly _tag: "Flags"; readonly flags: Readonly<Record<string, string>> }

/**
 * Tokenises `argv`: `--flag value`, `--flag=value`, bare boolean `--trust-x-forwarded-for` (or
 * `=true`/`=false`). `--help`/`-h` and `--version` win wherever they appear, so help is reachable
 * even from a broken command line; otherwise the first problem (unknown flag, missing value,
 * repeated flag, stray argument) is refused.
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
