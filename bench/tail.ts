/**
 * The latency tail, from inside the server (issue 18): runs the loadgen against servers that carry
 * bench/lib/loop-probe.mjs and prints, per run, the round-trip percentiles next to what the
 * server's event loop went through meanwhile — loop delay p50…max, utilisation, GC pauses by kind
 * and every pause ≥ 2 ms. Several commands alternate (A B A B …, a fresh process each run).
 *
 *   node bench/tail.ts [--rounds 3] [--bytes 100] [--frames 20000] [--window 32]
 *     [--cmd "<server command>" --cmd "…"]   (default: the relay as npm start runs it)
 *
 * A server command is `node [flags] <entry> [args]`; the probe is put right after `node`.
 * `{port}` is substituted (appended as `--listen 127.0.0.1:{port}` when missing).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { buildService, freePort, RELAY_ENTRY, RELAY_NODE_FLAGS, REPO_ROOT, runNodeScript, splitCommand, startServer, stopServer } from "./lib/proc.ts"
import { median } from "./lib/stats.ts"

const LIMITS_OFF = "--rate-limit-burst 0 --max-connections-per-ip 0 --max-connections 100000"
const RELAY = ["node_modules/.bin/node", ...RELAY_NODE_FLAGS, RELAY_ENTRY, LIMITS_OFF].join(" ")
const PROBE = path.join(REPO_ROOT, "bench", "lib", "loop-probe.mjs")

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    bytes: { type: "string", default: "100" },
    frames: { type: "string", default: "20000" },
    window: { type: "string", default: "32" },
    cmd: { type: "string", multiple: true }
  },
  strict: true
})

type Json = Record<string, unknown>
const commands = values.cmd ?? [RELAY]
if (commands === undefined || commands.length === 0) throw new Error("no command")

const withProbe = (template: string, port: number): Array<string> => {
  const filled = (template.includes("{port}") ? template : `${template} --listen 127.0.0.1:{port}`).replaceAll("{port}", `${port}`)
  const [node, ...rest] = splitCommand(filled)
  return [node!, "--import", PROBE, ...rest]
}

const runOnce = async (side: number, roundNo: number): Promise<Json> => {
  const port = await freePort()
  const probeFile = path.join(REPO_ROOT, "bench", "out", `tail-${side}-${roundNo}.jsonl`)
  fs.rmSync(probeFile, { force: true })
  process.env["LOOP_PROBE_FILE"] = probeFile
  const server = await startServer(withProbe(commands[side]!, port), port, path.join(REPO_ROOT, "bench", "out", `tail-${side}-${roundNo}.log`))
  try {
    await new Promise((r) => setTimeout(r, 500))
    server.child.kill("SIGUSR2") // start of the window: forget the boot
    const load = await runNodeScript("bench/loadgen.ts", [
      "--url", `ws://127.0.0.1:${port}`, "--servers", "4", "--phones", "4", "--processes", "2",
      "--bytes", values.bytes, "--frames", values.frames, "--window", values.window
    ], 300_000)
    server.child.kill("SIGUSR2")
    await new Promise((r) => setTimeout(r, 300))
    const result = JSON.parse(load.stdout.trim().split("\n").pop() || "{}") as Json
    const probe = JSON.parse(fs.readFileSync(probeFile, "utf8").trim().split("\n").pop() || "{}") as Json
    const run = {
      side,
      round: roundNo,
      ok: load.code === 0,
      roundTripsPerSec: result["roundTripsPerSec"],
      roundTrip: { p50Ms: result["p50Ms"], p99Ms: result["p99Ms"], p999Ms: result["p999Ms"], maxMs: result["maxMs"] },
      ...probe
    }
    process.stdout.write(`${JSON.stringify(run)}\n`)
    return run
  } finally {
    await stopServer(server)
  }
}

const main = async () => {
  buildService()
  const runs: Array<Json> = []
  for (let r = 1; r <= Number(values.rounds); r++) {
    for (let side = 0; side < commands.length; side++) runs.push(await runOnce(side, r))
  }
  const pick = (run: Json, a: string, b: string) => Number((run[a] as Json | undefined)?.[b])
  for (let side = 0; side < commands.length; side++) {
    const mine = runs.filter((x) => x["side"] === side && x["ok"] === true)
    const med = (a: string, b: string) => median(mine.map((x) => pick(x, a, b)))
    process.stdout.write(`${JSON.stringify({
      summary: "medians",
      side,
      command: commands[side],
      runs: mine.length,
      roundTripsPerSec: median(mine.map((x) => Number(x["roundTripsPerSec"]))),
      roundTripP50Ms: med("roundTrip", "p50Ms"),
      roundTripP99Ms: med("roundTrip", "p99Ms"),
      loopDelayP99Ms: med("loopDelay", "p99Ms"),
      loopDelayP999Ms: med("loopDelay", "p999Ms"),
      loopDelayMaxMs: med("loopDelay", "maxMs"),
      utilisation: median(mine.map((x) => Number(x["utilisation"])))
    })}\n`)
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`tail: ${e instanceof Error ? e.message : String(e)}\n`)
    process.exit(1)
  }
)
