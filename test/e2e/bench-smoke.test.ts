/**
 * Smoke run of the benchmark load generator against the real relay process: a few hundred frames
 * (2 server-ids × 2 phones, W = 8) must all come back whole, in order and exactly once, and
 * bench/loadgen.ts must exit 0. Not a performance test: no throughput or latency is asserted.
 */
import { spawn } from "node:child_process"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type RelayProcess, startRelay } from "../support/RelayProcess.ts"

const ROOT = Path.resolve(import.meta.dirname, "../..")
const NODE = Path.join(ROOT, "node_modules/.bin/node")

const runLoadgen = (args: ReadonlyArray<string>): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve) => {
    const child = spawn(NODE, ["bench/loadgen.ts", ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()))
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => child.kill("SIGKILL"), 25_000)
    child.on("exit", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })

describe("bench smoke", () => {
  let relay: RelayProcess
  beforeAll(async () => {
    relay = await startRelay(["--max-connections-per-ip", "0", "--max-connections", "100000"])
  })
  afterAll(async () => {
    await relay?.stop()
  })

  it("loadgen: 2×2 phones, 300 frames each, W=8 — nothing lost, reordered, duplicated or corrupted", async () => {
    const frames = 300
    const run = await runLoadgen([
      "--url", relay.url,
      "--servers", "2",
      "--phones", "2",
      "--frames", `${frames}`,
      "--warmup", "20",
      "--bytes", "100",
      "--window", "8",
      "--timeout", "20",
      "--stall", "10"
    ])
    expect(run.stderr).toBe("")
    expect(run.code).toBe(0)
    const result = JSON.parse(run.stdout.trim().split("\n").pop() ?? "{}") as Record<string, unknown>
    expect(result).toMatchObject({
      lost: 0,
      reordered: 0,
      duplicated: 0,
      corrupted: 0,
      unexpectedCloses: 0,
      timedOut: false,
      received: 2 * 2 * frames
    })
    expect(result["roundTripsPerSec"]).toBeGreaterThan(0)
  }, 30_000)
})

describe("bench runs the relay as npm start does", () => {
  it("takes npm start's V8 flags from package.json, and node accepts them", async () => {
    const { RELAY_ENTRY, RELAY_NODE_FLAGS } = await import("../../bench/lib/proc.ts")
    const start = (await import("../../package.json", { with: { type: "json" } })).default.scripts.start
    expect(RELAY_NODE_FLAGS.length).toBeGreaterThan(0)
    expect(RELAY_ENTRY).toBe("dist/service/relay.mjs")
    expect(start).toBe(`npm run --silent build:service && exec node ${RELAY_NODE_FLAGS.join(" ")} ${RELAY_ENTRY}`)
    // A flag node does not know makes it exit 9 ("bad option") before running anything.
    const code = await new Promise<number | null>((resolve) =>
      spawn(NODE, [...RELAY_NODE_FLAGS, "-e", "0"], { cwd: ROOT, stdio: "ignore" }).on("exit", resolve)
    )
    expect(code).toBe(0)
  })
})
