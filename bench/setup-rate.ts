/**
 * Connection setup rate: how many WebSocket upgrades per second the relay completes.
 *
 *   node bench/setup-rate.ts --url ws://127.0.0.1:PORT [--servers 64] [--phones 8]
 *     [--concurrency 32] [--timeout 60]
 *
 * Phase 1 opens K binaries (unique server-ids), phase 2 opens P phones per server-id, each with at
 * most --concurrency upgrades in flight. Prints one JSON line (overall and per-phase upgrades/s,
 * per-upgrade latency percentiles), closes everything and exits; non-zero if any upgrade failed or
 * a phone was rejected after its upgrade (e.g. 4404/4429) within a 300 ms settle window.
 */
import { randomBytes } from "node:crypto"
import { performance } from "node:perf_hooks"
import { parseArgs } from "node:util"
import type { WebSocket } from "ws"
import { makeArgChecks } from "./lib/args.ts"
import { binaryHeaders, openSocket, phoneHeaders, pool } from "./lib/dial.ts"
import { mergeSorted, percentile, round } from "./lib/stats.ts"

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    servers: { type: "string", default: "64" },
    phones: { type: "string", default: "8" },
    concurrency: { type: "string", default: "32" },
    timeout: { type: "string", default: "60" }
  },
  strict: true
})

const { int, loopbackUrl } = makeArgChecks("setup-rate")
const url = loopbackUrl(values.url)
const servers = int("servers", values.servers, 1)
const phones = int("phones", values.phones, 0)
const concurrency = int("concurrency", values.concurrency, 1)
const timeoutMs = int("timeout", values.timeout, 1) * 1000

setTimeout(() => {
  process.stderr.write("setup-rate: timeout\n")
  process.exit(1)
}, timeoutMs).unref()

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

const open: Array<WebSocket> = []
let failed = 0
let rejected = 0

/** Open one socket per item, timing each upgrade; returns [elapsed ms, latency samples]. */
const phase = async <A>(items: ReadonlyArray<A>, dial: (a: A) => Promise<WebSocket>): Promise<[number, Float64Array]> => {
  const lat = new Float64Array(items.length)
  let n = 0
  const t0 = performance.now()
  await pool(items, concurrency, async (a) => {
    const s = performance.now()
    try {
      const ws = await dial(a)
      lat[n++] = performance.now() - s
      open.push(ws)
    } catch {
      failed++
    }
  })
  return [performance.now() - t0, lat.subarray(0, n)]
}

const main = async (): Promise<number> => {
  const ids = Array.from({ length: servers }, () => `setup-${randomBytes(8).toString("hex")}`)
  const [binMs, binLat] = await phase(ids, (id) => openSocket(`${url}/v1/server`, binaryHeaders(id)))
  const jobs = ids.flatMap((id) => Array.from({ length: phones }, () => id))
  const [phoneMs, phoneLat] = await phase(jobs, async (id) => {
    const ws = await openSocket(`${url}/v1/client`, phoneHeaders(id))
    ws.once("close", () => rejected++)
    return ws
  })
  await sleep(300)
  const sorted = mergeSorted([binLat, phoneLat])
  const total = binLat.length + phoneLat.length
  const out = {
    upgradesPerSec: round(total / ((binMs + phoneMs) / 1000), 1),
    binaryUpgradesPerSec: round(binLat.length / (binMs / 1000), 1),
    phoneUpgradesPerSec: phones > 0 ? round(phoneLat.length / (phoneMs / 1000), 1) : 0,
    p50Ms: round(percentile(sorted, 50)),
    p99Ms: round(percentile(sorted, 99)),
    binaries: binLat.length,
    phones: phoneLat.length,
    failed,
    rejected,
    elapsedMs: round(binMs + phoneMs, 1),
    concurrency
  }
  process.stdout.write(`${JSON.stringify(out)}\n`)
  const closed = (ws: WebSocket): Promise<void> =>
    ws.readyState === ws.CLOSED ? Promise.resolve() : new Promise((r) => ws.once("close", () => r()))
  for (const ws of open) {
    ws.removeAllListeners("close")
    ws.close(1000)
  }
  await Promise.race([Promise.all(open.map(closed)), sleep(2000)])
  for (const ws of open) ws.terminate()
  return failed > 0 || rejected > 0 ? 1 : 0
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`setup-rate: ${e instanceof Error ? e.message : String(e)}\n`)
    process.exit(1)
  }
)
