/**
 * Top allocation sites of a sampling heap profile (bench/lib/alloc-probe.mjs, or `.heapprofile`
 * from DevTools): bytes allocated per function (self), and per source file, as shares of the total.
 *
 *   node bench/alloc-top.ts <profile.heapprofile> [--top 25] [--per <n>]
 *
 * With `--per n` every row also shows bytes per unit of work (e.g. per round trip).
 */
import * as fs from "node:fs"
import { parseArgs } from "node:util"

interface Node {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly selfSize: number
  readonly children: ReadonlyArray<Node>
}

const { values, positionals } = parseArgs({
  options: { top: { type: "string", default: "25" }, per: { type: "string" } },
  allowPositionals: true,
  strict: true
})
const file = positionals[0]
if (file === undefined) {
  process.stderr.write("usage: node bench/alloc-top.ts <profile.heapprofile> [--top 25] [--per n]\n")
  process.exit(2)
}
const profile = JSON.parse(fs.readFileSync(file, "utf8")) as { head: Node }
const byFunction = new Map<string, number>()
const byFile = new Map<string, number>()
let total = 0
const walk = (node: Node) => {
  const { functionName, url, lineNumber } = node.callFrame
  const short = url.replace(/^.*\/(node_modules\/|dist\/|src\/)/, "$1")
  const key = `${functionName || "(anonymous)"} ${short}:${lineNumber + 1}`
  byFunction.set(key, (byFunction.get(key) ?? 0) + node.selfSize)
  byFile.set(short || "(native)", (byFile.get(short || "(native)") ?? 0) + node.selfSize)
  total += node.selfSize
  for (const child of node.children) walk(child)
}
walk(profile.head)

const per = values.per === undefined ? undefined : Number(values.per)
const show = (title: string, map: Map<string, number>) => {
  process.stdout.write(`\n${title} (total ${(total / 1e6).toFixed(1)} MB${per ? `, ${(total / per).toFixed(0)} B per unit` : ""})\n`)
  for (const [key, bytes] of [...map].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top))) {
    const share = ((bytes / total) * 100).toFixed(1).padStart(5)
    process.stdout.write(`${share} %  ${per ? `${(bytes / per).toFixed(0).padStart(6)} B  ` : ""}${key}\n`)
  }
}
show("bytes allocated, by function (self)", byFunction)
show("bytes allocated, by file", byFile)
