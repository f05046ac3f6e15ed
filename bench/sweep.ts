/**
 * Sweeps, relay vs baseline, a fresh server process for every run (relay, baseline, relay, … per
 * point), medians over --rounds:
 *   (a) frame size: 100 B, 4 KiB, 64 KiB frames at K=4 server-ids × P=4 phones, W=32 (fewer frames
 *       per phone for the big sizes; W lowered so P × W × B ≤ 2 MiB, i.e. W=8 at 64 KiB: both servers
 *       end a phone whose frames overflow the binary's 4 MiB unflushed-bytes bound);
 *   (b) concurrency: 1, 4, 16, 64, 256 concurrent phone↔binary pairs, P = min(--phones-per-id, n)
 *       phones on each of ceil(n/P) server-ids (one echoing binary each), 100 B frames, W=32,
 *       about --total round trips per run.
 * Writes bench/out/sweep.json and the chart docs/performance-sweep.svg (throughput and p99 against
 * the number of pairs), and prints a markdown table.
 *
 *   node bench/sweep.ts [--rounds 1] [--pairs 1,4,16,64,256] [--sizes 100,4096,65536]
 *     [--phones-per-id 4] [--window 32] [--total 80000] [--processes 1]
 *     [--relay-cmd "…{port}…"] [--baseline-cmd "…"] [--svg-only]
 *
 * --svg-only redraws the chart from an existing bench/out/sweep.json without running anything.
 * Exit 1 if any loadgen run failed its checks (loss, reorder, duplicate, corruption, timeout).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { renderChart } from "./lib/chart.ts"
import { buildService, cpuMs, freePort, RELAY_ENTRY, RELAY_NODE_FLAGS, REPO_ROOT, runNodeScript, splitCommand, startServer, stopServer } from "./lib/proc.ts"
import { median, round } from "./lib/stats.ts"

// The relay as `npm start` runs it: the service bundle, built from the current sources.
buildService()

/** The relay as `npm start` runs it (its V8 flags included), with the per-IP limits off. */
const DEFAULT_RELAY = [
  "node_modules/.bin/node", ...RELAY_NODE_FLAGS, `${RELAY_ENTRY} --listen 127.0.0.1:{port} --metrics-listen ''`,
  "--rate-limit-burst 0 --max-connections-per-ip 0 --max-connections 100000"
].join(" ")
const DEFAULT_BASELINE = "node_modules/.bin/node bench/baseline.ts --listen 127.0.0.1:{port}"

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "1" },
    pairs: { type: "string", default: "1,4,16,64,256" },
    sizes: { type: "string", default: "100,4096,65536" },
    "phones-per-id": { type: "string", default: "4" },
    window: { type: "string", default: "32" },
    total: { type: "string", default: "80000" },
    processes: { type: "string", default: "1" },
    timeout: { type: "string", default: "120" },
    "relay-cmd": { type: "string", default: DEFAULT_RELAY },
    "baseline-cmd": { type: "string", default: DEFAULT_BASELINE },
    out: { type: "string", default: "bench/out/sweep.json" },
    svg: { type: "string", default: "docs/performance-sweep.svg" },
    "svg-only": { type: "boolean", default: false }
  },
  strict: true
})

const ints = (name: string, v: string, min: number, max: number): Array<number> => {
  const out = v.split(",").map(Number)
  if (out.length === 0 || out.some((n) => !Number.isInteger(n) || n < min || n > max)) {
    throw new Error(`--${name} must be integers ${min}..${max} (got ${v})`)
  }
  return out
}

type Side = "relay" | "baseline"
type Json = Record<string, unknown>

interface Load {
  readonly servers: number
  readonly phones: number
  readonly frames: number
  readonly warmup: number
  readonly bytes: number
  readonly window: number
}

interface Stat {
  readonly ok: number
  readonly failed: number
  readonly roundTripsPerSec: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly cpuUsPerRoundTrip: number
  readonly payloadMBps: number
}

interface Point {
  readonly kind: "size" | "pairs"
  readonly label: string
  /** Frame bytes (kind size) or concurrent pairs (kind pairs). */
  readonly x: number
  readonly load: Load
  readonly relay: Stat
  readonly baseline: Stat
  readonly ratio: { readonly roundTripsPerSec: number; readonly p99Ms: number; readonly cpuUsPerRoundTrip: number }
  readonly runs: ReadonlyArray<Json>
}

interface Sweep {
  readonly startedAt: string
  readonly finishedAt: string
  readonly loadAvgStart: ReadonlyArray<number>
  readonly loadAvgEnd: ReadonlyArray<number>
  readonly machine: Json
  readonly rounds: number
  readonly points: ReadonlyArray<Point>
}

const num = (j: Json | undefined, key: string): number => {
  const v = j?.[key]
  return typeof v === "number" ? v : Number.NaN
}

const argvFor = (template: string, port: number): Array<string> => {
  const withPort = template.includes("{port}") ? template : `${template} --listen 127.0.0.1:{port}`
  return splitCommand(withPort.replaceAll("{port}", `${port}`))
}

/** One loadgen run against a fresh server process. */
const runOnce = async (side: Side, load: Load, tag: string): Promise<Json> => {
  const port = await freePort()
  const argv = argvFor(side === "relay" ? values["relay-cmd"] : values["baseline-cmd"], port)
  const server = await startServer(argv, port, path.join(REPO_ROOT, "bench", "out", `sweep-${side}-${tag}.log`))
  try {
    const args = ["--url", `ws://127.0.0.1:${port}`, "--servers", `${load.servers}`, "--phones", `${load.phones}`,
      "--frames", `${load.frames}`, "--warmup", `${load.warmup}`, "--bytes", `${load.bytes}`, "--window", `${load.window}`,
      "--processes", values.processes, "--timeout", values.timeout]
    const cpu0 = cpuMs(server.child.pid)
    const r = await runNodeScript("bench/loadgen.ts", args, (Number(values.timeout) + 30) * 1000)
    const cpu1 = cpuMs(server.child.pid)
    if (r.stderr.trim() !== "") process.stderr.write(r.stderr)
    let out: Json = {}
    try {
      out = JSON.parse(r.stdout.trim().split("\n").pop() ?? "") as Json
    } catch { /* reported as failed below */ }
    const trips = (load.frames + load.warmup) * load.servers * load.phones
    return { side, ...out, ok: r.code === 0, cpuUsPerRoundTrip: round(((cpu1 - cpu0) * 1000) / trips, 2) }
  } finally {
    await stopServer(server)
  }
}

const stat = (runs: ReadonlyArray<Json>, side: Side, bytes: number): Stat => {
  const mine = runs.filter((r) => r["side"] === side)
  const good = mine.filter((r) => r["ok"] === true)
  const med = (key: string): number => round(median(good.map((r) => num(r, key))), 3)
  const rt = med("roundTripsPerSec")
  return {
    ok: good.length,
    failed: mine.length - good.length,
    roundTripsPerSec: rt,
    p50Ms: med("p50Ms"),
    p99Ms: med("p99Ms"),
    cpuUsPerRoundTrip: med("cpuUsPerRoundTrip"),
    payloadMBps: round((rt * bytes) / 1e6, 2)
  }
}

const measure = async (kind: Point["kind"], label: string, x: number, load: Load, rounds: number): Promise<Point> => {
  const runs: Array<Json> = []
  for (let r = 1; r <= rounds; r++) {
    for (const side of ["relay", "baseline"] as const) {
      const run = await runOnce(side, load, `${kind}-${x}-${r}`)
      runs.push(run)
      process.stderr.write(`sweep: ${label} ${side} round ${r}: ${num(run, "roundTripsPerSec")} rt/s, p99 ${num(run, "p99Ms")} ms${run["ok"] === true ? "" : " FAILED"}\n`)
    }
  }
  const relay = stat(runs, "relay", load.bytes)
  const baseline = stat(runs, "baseline", load.bytes)
  const ratio = (k: "roundTripsPerSec" | "p99Ms" | "cpuUsPerRoundTrip"): number => round(relay[k] / baseline[k], 3)
  return {
    kind, label, x, load, relay, baseline, runs,
    ratio: { roundTripsPerSec: ratio("roundTripsPerSec"), p99Ms: ratio("p99Ms"), cpuUsPerRoundTrip: ratio("cpuUsPerRoundTrip") }
  }
}

const framesForBytes = (bytes: number): number => (bytes <= 1024 ? 5000 : bytes <= 16_384 ? 2000 : 300)

const machine = (): Json => ({
  cpus: os.availableParallelism(),
  cpuModel: os.cpus()[0]?.model ?? "?",
  memGiB: round(os.totalmem() / 2 ** 30, 1),
  node: process.version,
  os: `${os.type()} ${os.release()} ${os.machine()}`
})

const markdown = (s: Sweep): string => {
  const rows = [
    "| point | relay rt/s | baseline rt/s | ratio | relay p99 ms | baseline p99 ms | ratio | relay CPU µs/rt | baseline CPU µs/rt |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  ]
  for (const p of s.points) {
    const bad = p.relay.failed + p.baseline.failed > 0 ? " (FAILED runs)" : ""
    rows.push(`| ${p.label}${bad} | ${p.relay.roundTripsPerSec} | ${p.baseline.roundTripsPerSec} | ${p.ratio.roundTripsPerSec} | ` +
      `${p.relay.p99Ms} | ${p.baseline.p99Ms} | ${p.ratio.p99Ms} | ${p.relay.cpuUsPerRoundTrip} | ${p.baseline.cpuUsPerRoundTrip} |`)
  }
  return rows.join("\n")
}

const chart = (s: Sweep): string => {
  const pairs = s.points.filter((p) => p.kind === "pairs")
  const series = (pick: (st: Stat) => number) => [
    { name: "relay (npm start)", color: "#1f77b4", points: pairs.map((p) => [p.x, pick(p.relay)] as const) },
    { name: "baseline (plain ws)", color: "#ff7f0e", points: pairs.map((p) => [p.x, pick(p.baseline)] as const) }
  ]
  const w = pairs[0]?.load.window ?? 0
  const b = pairs[0]?.load.bytes ?? 0
  const la = s.loadAvgStart.map((v) => v.toFixed(2)).join(" ")
  return renderChart(
    "Relay vs plain-ws baseline against concurrent pairs",
    `${s.startedAt.slice(0, 16).replace("T", " ")} UTC · ${b} B frames, W=${w} · median of ${s.rounds} run(s) per point · ` +
      `${String(s.machine["cpus"])} cores · load average at start ${la}`,
    [
      { title: "Throughput", xLabel: "concurrent phone↔binary pairs (log scale)", yLabel: "round trips / s", xLog: true, series: series((st) => st.roundTripsPerSec) },
      { title: "p99 round-trip latency", xLabel: "concurrent phone↔binary pairs (log scale)", yLabel: "p99 latency (ms)", xLog: true, series: series((st) => st.p99Ms) }
    ]
  )
}

const main = async (): Promise<number> => {
  const outFile = path.resolve(REPO_ROOT, values.out)
  const svgFile = path.resolve(REPO_ROOT, values.svg)
  if (values["svg-only"]) {
    const s = JSON.parse(fs.readFileSync(outFile, "utf8")) as Sweep
    fs.writeFileSync(svgFile, chart(s))
    process.stdout.write(`${markdown(s)}\n`)
    return 0
  }
  const rounds = ints("rounds", values.rounds, 1, 20)[0] ?? 1
  const perId = ints("phones-per-id", values["phones-per-id"], 1, 16)[0] ?? 4
  const window = ints("window", values.window, 1, 1024)[0] ?? 32
  const total = ints("total", values.total, 100, 10_000_000)[0] ?? 40_000
  const startedAt = new Date().toISOString()
  const loadAvgStart = os.loadavg().map((v) => round(v, 2))
  const points: Array<Point> = []
  for (const bytes of ints("sizes", values.sizes, 64, 200_000)) {
    const frames = framesForBytes(bytes)
    // Both servers bound the unflushed bytes towards one binary at 4 MiB: keep P × W × B ≤ 2 MiB.
    const w = Math.min(window, Math.max(1, Math.floor(2 * 1024 * 1024 / (4 * bytes))))
    const load = { servers: 4, phones: 4, frames, warmup: Math.max(20, Math.round(frames / 10)), bytes, window: w }
    const label = `${bytes >= 1024 ? `${bytes / 1024} KiB` : `${bytes} B`} frames, 4×4, W=${w}`
    points.push(await measure("size", label, bytes, load, rounds))
  }
  for (const n of ints("pairs", values.pairs, 1, 4096)) {
    const phones = Math.min(perId, n)
    const servers = Math.ceil(n / phones)
    const frames = Math.min(20_000, Math.max(200, Math.round(total / (servers * phones))))
    const load = { servers, phones, frames, warmup: Math.max(20, Math.round(frames / 10)), bytes: 100, window }
    points.push(await measure("pairs", `${servers * phones} pairs (${servers}×${phones})`, servers * phones, load, rounds))
  }
  const sweep: Sweep = {
    startedAt, finishedAt: new Date().toISOString(), loadAvgStart,
    loadAvgEnd: os.loadavg().map((v) => round(v, 2)), machine: machine(), rounds, points
  }
  fs.mkdirSync(path.dirname(outFile), { recursive: true })
  fs.writeFileSync(outFile, `${JSON.stringify(sweep, null, 2)}\n`)
  fs.mkdirSync(path.dirname(svgFile), { recursive: true })
  fs.writeFileSync(svgFile, chart(sweep))
  process.stdout.write(`${markdown(sweep)}\n\nwrote ${path.relative(REPO_ROOT, outFile)} and ${path.relative(REPO_ROOT, svgFile)}\n`)
  return points.some((p) => p.relay.failed + p.baseline.failed > 0) ? 1 : 0
}

setTimeout(() => {
  process.stderr.write("sweep: hard timeout\n")
  process.exit(1)
}, 3 * 3600 * 1000).unref()
main().then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`sweep: ${e instanceof Error ? e.message : String(e)}\n`)
  process.exit(1)
})
