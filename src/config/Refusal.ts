/**
 * A boot refusal (SPEC §9): one line that names the setting at fault and says why. The same
 * rule is refused from three sources — the command line, a `ConfigProvider`, values given to
 * `RelayConfig.make` — and each names a setting its own way, so the rules refer to settings by
 * field path with `field("maxFrameBytes")` and a `Namer` turns that into `--max-frame-bytes`,
 * `PYRYCODE_RELAY_MAX_FRAME_BYTES`, `relay.max-frame-bytes` or `maxFrameBytes`. */
import * as Schema from "effect/Schema"
import type * as SchemaAST from "effect/SchemaAST"
import type * as SchemaIssue from "effect/SchemaIssue"

export class BootRefusal extends Schema.TaggedError<BootRefusal>()("BootRefusal", {
  message: Schema.String
}) {}

/** How a refusal names the setting at a field path of `RelayConfigShape` (`["acme", "httpListen"]`). */
export type Namer = (path: ReadonlyArray<string>) => string

/** Values given to `RelayConfig.make`: the field path as written in code. */
export const fieldNamer: Namer = (path) => path.join(".")

/**
 * A reference to the setting at a field path, inside a rule's message. Delimited by NUL, which
 * `show` (JSON) always escapes, so nothing quoted from the input can pass for one.
 */
export const field = (path: string): string => `\u0000${path}\u0000`

const REFERENCE = /\u0000([A-Za-z.]+)\u0000/g

/**
 * `message` with every `field(…)` named. A message that does not start with one is about the
 * setting at `path`, and gets its name in front: `--max-connections: must be …`.
 */
export const phrase = (path: ReadonlyArray<string>, message: string, name: Namer): string => {
  const named = message.replace(REFERENCE, (_, at: string) => name(at.split(".")))
  return message.startsWith("\u0000") || path.length === 0 ? named : `${name(path)}: ${named}`
}

interface Found {
  readonly path: ReadonlyArray<string>
  readonly message: string
}

const messageOf = (annotations: { readonly message?: unknown } | undefined): string | undefined =>
  typeof annotations?.message === "string" ? annotations.message : undefined

/** What a declared or primitive schema expects, without the input (which may be a secret). */
const expectedOf = (ast: SchemaAST.AST): string => {
  const expected = ast.annotations?.["expected"]
  if (typeof expected === "string") return expected
  switch (ast._tag) {
    case "String":
      return "a string"
    case "Number":
      return "a number"
    case "Boolean":
      return "true or false"
    case "Arrays":
      return "an array"
    case "Objects":
      return "an object"
    default:
      return "a valid value"
  }
}

/**
 * The first problem in `issue`, depth first, in field order. The input is never quoted from
 * here: the checks quote what is safe to quote themselves, and a credential is never.
 */
const firstProblem = (issue: SchemaIssue.Issue, path: ReadonlyArray<string>): Found => {
  switch (issue._tag) {
    case "Pointer":
      return firstProblem(issue.issue, [...path, ...issue.path.map(String)])
    case "Filter": {
      const own = messageOf(issue.filter.annotations)
      return own === undefined ? firstProblem(issue.issue, path) : { path, message: own }
    }
    case "Encoding":
      return firstProblem(issue.issue, path)
    case "Composite":
    case "AnyOf": {
      const first = issue.issues[0]
      return first === undefined ? { path, message: `must be ${expectedOf(issue.ast)}` } : firstProblem(first, path)
    }
    case "InvalidValue":
      return { path, message: messageOf(issue.annotations) ?? "is not a valid value" }
    case "InvalidType":
      return { path, message: `must be ${expectedOf(issue.ast)}` }
    case "MissingKey":
      return { path, message: "is missing" }
    case "UnexpectedKey":
      return { path, message: "is not a setting" }
    case "Forbidden":
    case "OneOf":
      return { path, message: "is not a valid value" }
  }
}

/** The one line for the first problem of a failed decode. */
export const refusalFromIssue = (issue: SchemaIssue.Issue, name: Namer): BootRefusal => {
  const found = firstProblem(issue, [])
  return new BootRefusal({ message: phrase(found.path, found.message, name) })
}
