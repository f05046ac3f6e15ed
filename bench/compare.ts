/**
 * A/B benchmark: the relay under test vs bench/baseline.ts — or, with `--against <git rev>`, vs
 * the relay at that revision — alternating (A B A B …), a fresh server process on a free port for
 * every run, the same loadgen arguments for both.
 *
 *   node bench/compare.ts [--rounds 3] [--servers 4 --phones 4 --frames 20000 --warmup 500
 *     --bytes 100 --window 32 --processes 2 --flush immediate] [--setup --setup-servers 64
 *     --setup-phones 8] [--relay-cmd "…"] [--baseline-cmd "…" | --against <rev>]
 *
 * `--against` checks the revision out into a temporary git worktree (bench/lib/revision.ts), runs
 * it as its own `npm start` would, and removes the worktree at the end.
 *
 * Commands may use {port} and {metricsPort}; without {port}, `--listen 127.0.0.1:{port}` is
 * appended. The default relay command turns the per-IP rate limit and per-IP cap off (every bench
 * connection comes from 127.0.0.1). Server output goes to bench/out/<side>-<round>.log.
 *
 * Prints one JSON line per run, then a table of medians with the relay/baseline ratios, then a
 * summary JSON line. Besides wall-clock round trips/s and latency it reports the server's CPU time
 * per round trip (from /proc, whole loadgen run incl. connect and warm-up): far less sensitive to
 * other load on the machine than throughput. The server must be the spawned process itself (not a
 * wrapper such as npm) for that number to mean anything. Exit 1 if any run failed its checks.
 */
import * as path from "node:path"
import { parseArgs } from "node:util"
import { buildService, cpuMs, freePort, RELAY_ENTRY, RELAY_NODE_FLAGS, REPO_ROOT, runNodeScript, splitCommand, startServer, stopServer } from "./lib/proc.ts"
import { checkoutRevision } from "./lib/revision.ts"
import { median, round } from "./lib/stats.ts"

// The relay as `npm start` runs it: the service bundle, built from the current sources.
buildService()

/** Every bench connection comes from 127.0.0.1: the per-IP limits are off. */
const LIMITS_OFF = "--rate-limit-burst 0 --max-connections-per-ip 0 --max-connections 100000"
/** The relay as `npm start` runs it (its V8 flags included), with the per-IP limits off. */
const DEFAULT_RELAY = [
  "node_modules/.bin/node", ...RELAY_NODE_FLAGS, `${RELAY_ENTRY} --listen 127.0.0.1:{port} --metrics-listen 127.0.0.1:{metricsPort}`,
  LIMITS_OFF
].join(" ")
const DEFAULT_BASELINE = "node_modules/.bin/node bench/baseline.ts --listen 127.0.0.1:{port}"

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    servers: { type: "string", default: "4" },
    phones: { type: "string", default: "4" },
    frames: { type: "string", default: "20000" },
    warmup: { type: "string", default: "500" },
    bytes: { type: "string", default: "100" },
    window: { type: "string", default: "32" },
    // Two client processes: one alone saturates its core before either server does (the relay
    // then sits ~40 % idle), and the ratio would measure the client.
    processes: { type: "string", default: "2" },
    timeout: { type: "string", default: "120" },
    flush: { type: "string", default: "immediate" },
    setup: { type: "boolean", default: false },
    "setup-servers": { type: "string", default: "64" },
    "setup-phones": { type: "string", default: "8" },
    "relay-cmd": { type: "string", default: DEFAULT_RELAY },
    "baseline-cmd": { type: "string", default: DEFAULT_BASELINE },
    against: { type: "string" }
  },
  strict: true
})

const rounds = Number(values.rounds)
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 50) {
  process.stderr.write("compare: --rounds must be an integer 1..50\n")
  process.exit(2)
}

// With --against, the B side is the relay at that revision instead of the plain-ws baseline.
const against = values.against === undefined ? undefined : checkoutRevision(values.against, LIMITS_OFF)
const baselineCmd = against?.command ?? values["baseline-cmd"]
const baselineLabel = against === undefined ? "baseline" : `rev ${against.commit}`

const loadArgs = (port: number): Array<string> => [
  "--url", `ws://127.0.0.1:${port}`,
  "--servers", values.servers,
  "--phones", values.phones,
  "--frames", values.frames,
  "--warmup", values.warmup,
  "--bytes", values.bytes,
  "--window", values.window,
  "--processes", values.processes,
  "--timeout", values.timeout,
  "--flush", values.flush
]

const setupArgs = (port: number): Array<string> => [
  "--url", `ws://127.0.0.1:${port}`,
  "--servers", values["setup-servers"],
  "--phones", values["setup-phones"]
]

const argvFor = (template: string, port: number, metricsPort: number): Array<string> => {
  const withPort = template.includes("{port}") ? template : `${template} --listen 127.0.0.1:{port}`
  return splitCommand(withPort.replaceAll("{port}", `${port}`).replaceAll("{metricsPort}", `${metricsPort}`))
}

type Side = "relay" | "baseline"
type Json = Record<string, unknown>

interface Run {
  readonly side: Side
  readonly round: number
  readonly ok: boolean
  readonly load: Json | undefined
  readonly setup: Json | undefined
  /** Server CPU time during the loadgen run (connect + warm-up + measured), µs per round trip. */
  readonly cpuUsPerRoundTrip: number
}

const lastJsonLine = (out: string): Json | undefined => {
  const line = out.trim().split("\n").pop()
  if (line === undefined || line === "") return undefined
  try {
    return JSON.parse(line) as Json
  } catch {
    return undefined
  }
}

const runOnce = async (side: Side, roundNo: number): Promise<Run> => {
  const port = await freePort()
  const metricsPort = await freePort()
  const argv = argvFor(side === "relay" ? values["relay-cmd"] : baselineCmd, port, metricsPort)
  const logFile = path.join(REPO_ROOT, "bench", "out", `${side}-${roundNo}.log`)
  let server
  try {
    server = await startServer(argv, port, logFile)
  } catch (e) {
    process.stderr.write(`compare: ${side} round ${roundNo}: ${e instanceof Error ? e.message : String(e)}\n`)
    return { side, round: roundNo, ok: false, load: undefined, setup: undefined, cpuUsPerRoundTrip: Number.NaN }
  }
  const limitMs = (Number(values.timeout) + 30) * 1000
  try {
    const cpu0 = cpuMs(server.child.pid)
    const load = await runNodeScript("bench/loadgen.ts", loadArgs(port), limitMs)
    const cpu1 = cpuMs(server.child.pid)
    if (load.stderr.trim() !== "") process.stderr.write(load.stderr)
    let ok = load.code === 0
    let setup: Json | undefined
    if (values.setup) {
      const s = await runNodeScript("bench/setup-rate.ts", setupArgs(port), limitMs)
      if (s.stderr.trim() !== "") process.stderr.write(s.stderr)
      setup = lastJsonLine(s.stdout)
      ok &&= s.code === 0
    }
    const trips = (Number(values.frames) + Number(values.warmup)) * Number(values.servers) * Number(values.phones)
    const cpuUsPerRoundTrip = round(((cpu1 - cpu0) * 1000) / trips, 2)
    return { side, round: roundNo, ok, load: lastJsonLine(load.stdout), setup, cpuUsPerRoundTrip }
  } finally {
    await stopServer(server)
  }
}

const num = (j: Json | undefined, key: string): number => {
  const v = j?.[key]
  return typeof v === "number" ? v : Number.NaN
}

const main = async (): Promise<number> => {
  const runs: Array<Run> = []
  for (let r = 1; r <= rounds; r++) {
    for (const side of ["relay", "baseline"] as const) {
      const run = await runOnce(side, r)
      runs.push(run)
      const line = { side: side === "baseline" ? baselineLabel : side, round: r, ok: run.ok, cpuUsPerRoundTrip: run.cpuUsPerRoundTrip, ...run.load, ...(run.setup ? { setup: run.setup } : {}) }
      process.stdout.write(`${JSON.stringify(line)}\n`)
    }
  }
  const med = (side: Side, pick: (r: Run) => number): number =>
    median(runs.filter((r) => r.side === side && r.ok).map(pick))
  const metrics: Record<string, (r: Run) => number> = {
    roundTripsPerSec: (r) => num(r.load, "roundTripsPerSec"),
    p50Ms: (r) => num(r.load, "p50Ms"),
    p99Ms: (r) => num(r.load, "p99Ms"),
    cpuUsPerRoundTrip: (r) => r.cpuUsPerRoundTrip,
    ...(values.setup ? { upgradesPerSec: (r: Run) => num(r.setup, "upgradesPerSec") } : {})
  }
  const summary: Record<string, Record<string, number>> = {}
  process.stdout.write(`\n${"metric".padEnd(18)}${"relay".padStart(12)}${baselineLabel.padStart(14)}${"ratio".padStart(9)}\n`)
  for (const [name, pick] of Object.entries(metrics)) {
    const a = med("relay", pick)
    const b = med("baseline", pick)
    const ratio = round(a / b, 3)
    summary[name] = { relay: a, baseline: b, ratio }
    process.stdout.write(`${name.padEnd(18)}${`${a}`.padStart(12)}${`${b}`.padStart(14)}${`${ratio}`.padStart(9)}\n`)
  }
  const failed = runs.filter((r) => !r.ok).length
  process.stdout.write(`${JSON.stringify({ summary: "medians", rounds, against: baselineLabel, failedRuns: failed, ...summary })}\n`)
  return failed > 0 ? 1 : 0
}

main().then(
  (code) => {
    against?.remove()
    process.exit(code)
  },
  (e: unknown) => {
    against?.remove()
    process.stderr.write(`compare: ${e instanceof Error ? e.message : String(e)}\n`)
    process.exit(1)
  }
)
