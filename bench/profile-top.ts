/**
 * Prints the top self-time frames (and top files) of a `.cpuprofile` written by `node --cpu-prof`.
 *   node bench/profile-top.ts <file.cpuprofile> [--top 30]
 */
import { readFileSync } from "node:fs"

interface Node {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly children?: ReadonlyArray<number>
}
interface Profile {
  readonly nodes: ReadonlyArray<Node>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const file = process.argv[2]
if (file === undefined) throw new Error("usage: node bench/profile-top.ts <file.cpuprofile> [--top N]")
const topIndex = process.argv.indexOf("--top")
const top = topIndex === -1 ? 30 : Number(process.argv[topIndex + 1])
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const self = new Map<number, number>()
profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)))
const total = [...self.values()].reduce((a, b) => a + b, 0)

const short = (url: string) => url.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*?\/(src|bench)\//, "$1/")
const frames = new Map<string, number>()
const files = new Map<string, number>()
for (const [id, us] of self) {
  const { callFrame } = byId.get(id)!
  const key = `${callFrame.functionName || "(anonymous)"} ${short(callFrame.url)}:${callFrame.lineNumber + 1}`
  frames.set(key, (frames.get(key) ?? 0) + us)
  const f = short(callFrame.url) || callFrame.functionName
  const pkg = f.startsWith("effect/") ? "effect/" + f.split("/").slice(-1)[0] : f
  files.set(pkg, (files.get(pkg) ?? 0) + us)
}
const print = (title: string, map: Map<string, number>) => {
  console.log(`\n${title}`)
  for (const [k, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`)
  }
}
print("top frames by self time", frames)
print("top files by self time", files)
