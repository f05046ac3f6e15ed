/**
 * The folders of the core form no import cycle, and the core never imports `ws` or `node:http`
 * (STYLE §3): the socket adapter (`src/node/`) and the listeners (`src/http/`) are the only
 * doors to them. Read from the sources' import lines, type-only imports included.
 */
import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"

const SRC = path.resolve(import.meta.dirname, "../../src")
const CORE = ["domain", "connection", "outbox", "registry", "forwarding", "liveness", "session", "lifecycle"]

const sources = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name)
    return entry.isDirectory() ? sources(full) : entry.name.endsWith(".ts") ? [full] : []
  })

const importsOf = (file: string): Array<string> =>
  [...fs.readFileSync(file, "utf8").matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"/gm)].map((m) => m[1]!)

const folderOf = (file: string): string => path.relative(SRC, path.dirname(file)).split(path.sep)[0] ?? ""

/** Folder → the other folders its files import from. */
const folderGraph = (): Map<string, Set<string>> => {
  const graph = new Map<string, Set<string>>()
  for (const file of sources(SRC)) {
    const from = folderOf(file)
    for (const spec of importsOf(file)) {
      if (!spec.startsWith(".")) continue
      const to = folderOf(path.resolve(path.dirname(file), spec))
      if (to !== from) (graph.get(from) ?? graph.set(from, new Set()).get(from)!).add(to)
    }
  }
  return graph
}

/** A cycle among `folders` in `graph`, as a path, or undefined. */
const findCycle = (graph: Map<string, Set<string>>, folders: ReadonlyArray<string>): Array<string> | undefined => {
  const state = new Map<string, "open" | "done">()
  const stack: Array<string> = []
  const visit = (folder: string): Array<string> | undefined => {
    state.set(folder, "open")
    stack.push(folder)
    for (const next of graph.get(folder) ?? []) {
      if (!folders.includes(next)) continue
      if (state.get(next) === "open") return [...stack.slice(stack.indexOf(next)), next]
      if (state.get(next) === undefined) {
        const cycle = visit(next)
        if (cycle !== undefined) return cycle
      }
    }
    stack.pop()
    state.set(folder, "done")
    return undefined
  }
  for (const folder of folders) {
    if (state.get(folder) !== undefined) continue
    const cycle = visit(folder)
    if (cycle !== undefined) return cycle
  }
  return undefined
}

describe("layering", () => {
  it("the core folders import each other without a cycle", () => {
    const cycle = findCycle(folderGraph(), CORE)
    assert.isUndefined(cycle, `import cycle: ${cycle?.join(" → ")}`)
  })

  it("the registry does not import the forwarders, and the outbox imports neither", () => {
    const graph = folderGraph()
    assert.isFalse(graph.get("registry")?.has("forwarding") ?? false)
    assert.isFalse(graph.get("outbox")?.has("registry") ?? false)
    assert.isFalse(graph.get("outbox")?.has("forwarding") ?? false)
  })

  it("the core never imports ws or node:http", () => {
    for (const file of sources(SRC).filter((f) => CORE.includes(folderOf(f)))) {
      for (const spec of importsOf(file)) {
        assert.notInclude(["ws", "node:http", "node:https", "http"], spec, path.relative(SRC, file))
      }
    }
  })
})
