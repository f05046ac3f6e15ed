/**
 * Issue 12, item 7: phones of many distinct server-ids leave the heap where it started. Runs
 * bench/conn-id-heap.ts (its own process, `--expose-gc`) with 20 000 server-ids: remembering
 * anything per server-id or per conn_id ever issued costs ≥ 100 B each (the old de-dup set kept
 * ~300 B), i.e. ≥ 2 MB here, while V8's own noise after the warm-up stays well under 1 MB.
 */
import { spawn } from "node:child_process"
import * as Path from "node:path"
import { describe, expect, it } from "vitest"

const ROOT = Path.resolve(import.meta.dirname, "../..")
const NODE = Path.join(ROOT, "node_modules/.bin/node")
const SERVER_IDS = 20_000
const MAX_GROWTH_BYTES = 2_000_000

const runBench = (): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve) => {
    const child = spawn(
      NODE,
      ["bench/conn-id-heap.ts", "--server-ids", `${SERVER_IDS}`, "--max-growth-bytes", `${MAX_GROWTH_BYTES}`],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] }
    )
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()))
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
  })

describe("conn_id memory", () => {
  it("20 000 server-ids, each claimed, with a phone in and out, then expired: the heap does not grow by 2 MB", async () => {
    const run = await runBench()
    expect(run.stderr).toBe("")
    const result = JSON.parse(run.stdout.trim().split("\n").pop() ?? "{}") as Record<string, number>
    expect(result.serverIds).toBe(SERVER_IDS)
    expect(result.growthBytes, run.stdout).toBeLessThan(MAX_GROWTH_BYTES)
    expect(run.code).toBe(0)
  }, 60_000)
})
