/**
 * What grew between two heap snapshots (e.g. the before/after pair `idle-memory.ts --snapshot`
 * writes): shallow sizes and counts by object kind (constructor / closure name / internal type),
 * sorted by growth, optionally divided by the number of connections.
 *
 *   node bench/heap-top.ts <before.heapsnapshot> <after.heapsnapshot> [--per 2000] [--top 30]
 *
 * Shallow (self) sizes only: a Map's entries show up as "(object elements)" / "array" rows, not
 * under "Map". Snapshots above ~500 MB of JSON are too big for JSON.parse; use fewer connections.
 */
import { readFileSync } from "node:fs"
import { parseArgs } from "node:util"

const { values, positionals } = parseArgs({
  options: { per: { type: "string", default: "1" }, top: { type: "string", default: "30" } },
  allowPositionals: true,
  strict: true
})

interface Snapshot {
  readonly snapshot: { readonly meta: { readonly node_fields: ReadonlyArray<string>; readonly node_types: ReadonlyArray<unknown> } }
  readonly nodes: ReadonlyArray<number>
  readonly strings: ReadonlyArray<string>
}

interface Row {
  count: number
  bytes: number
}

/** Nodes whose name is their content (strings, numbers, code) are grouped by type alone. */
const BY_TYPE = new Set(["string", "concatenated string", "sliced string", "number", "code", "bigint", "symbol"])

const load = (file: string): Map<string, Row> => {
  const s = JSON.parse(readFileSync(file, "utf8")) as Snapshot
  const fields = s.snapshot.meta.node_fields
  const types = s.snapshot.meta.node_types[0] as ReadonlyArray<string>
  const width = fields.length
  const iType = fields.indexOf("type")
  const iName = fields.indexOf("name")
  const iSize = fields.indexOf("self_size")
  const out = new Map<string, Row>()
  for (let i = 0; i < s.nodes.length; i += width) {
    const type = types[s.nodes[i + iType] ?? 0] ?? "?"
    const name = s.strings[s.nodes[i + iName] ?? 0] ?? "?"
    const key = BY_TYPE.has(type) ? `(${type})` : `${type} ${name.length > 60 ? `${name.slice(0, 57)}...` : name}`
    const row = out.get(key) ?? { count: 0, bytes: 0 }
    row.count++
    row.bytes += s.nodes[i + iSize] ?? 0
    out.set(key, row)
  }
  return out
}

const [beforeFile, afterFile] = positionals
if (beforeFile === undefined) throw new Error("usage: node bench/heap-top.ts <before> [<after>] [--per N] [--top N]")
const per = Number(values.per)
const top = Number(values.top)
const before = afterFile === undefined ? new Map<string, Row>() : load(beforeFile)
const after = load(afterFile ?? beforeFile)
const diff: Array<[string, Row]> = []
for (const [key, a] of after) {
  const b = before.get(key) ?? { count: 0, bytes: 0 }
  diff.push([key, { count: a.count - b.count, bytes: a.bytes - b.bytes }])
}
diff.sort((x, y) => y[1].bytes - x[1].bytes)
const total = diff.reduce((acc, [, r]) => acc + r.bytes, 0)
const unit = per === 1 ? "bytes" : `bytes each (÷ ${per})`
console.log(`total shallow growth ${(total / 1024 / 1024).toFixed(1)} MB = ${(total / per).toFixed(0)} ${unit}`)
console.log(`${"bytes".padStart(10)}${"count".padStart(10)}  kind`)
for (const [key, r] of diff.slice(0, top)) {
  console.log(`${(r.bytes / per).toFixed(0).padStart(10)}${(r.count / per).toFixed(2).padStart(10)}  ${key}`)
}
