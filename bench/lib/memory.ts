/** Reading a server's memory from outside: VmRSS from /proc, and heap via bench/lib/heap-probe.ts. */
import * as fs from "node:fs"

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** VmRSS of a process in KB (NaN once it is gone). */
export const rssKB = (pid: number): number => {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? Number.NaN)
  } catch {
    return Number.NaN
  }
}

export interface HeapProbe {
  readonly heapUsed: number
  readonly heapTotal: number
  readonly external: number
  readonly arrayBuffers: number
  /** False when the server was started without --expose-gc (numbers then include garbage). */
  readonly gc: boolean
  readonly snapshot?: string
}

/**
 * SIGUSR2 → a server running under heap-probe.ts (with HEAP_PROBE_FILE=`file`) collects garbage
 * and writes its memoryUsage to `file`. Only signal a process that runs under the probe: for any
 * other Node process SIGUSR2 is fatal.
 */
export const probeHeap = async (pid: number, file: string, timeoutMs = 120_000): Promise<HeapProbe> => {
  fs.rmSync(file, { force: true })
  process.kill(pid, "SIGUSR2")
  for (let waited = 0; waited < timeoutMs; waited += 50) {
    await sleep(50)
    if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, "utf8")) as HeapProbe
  }
  throw new Error(`heap probe did not answer within ${timeoutMs / 1000} s`)
}
