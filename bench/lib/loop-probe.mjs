// Preloaded into a server under test (`node --import ./bench/lib/loop-probe.mjs …`, bench/tail.ts):
// what stalls its event loop. On each SIGUSR2 it appends one JSON line to $LOOP_PROBE_FILE with
// what happened since the previous one — event-loop delay percentiles (1 ms timer), event-loop
// utilisation, and every GC pause by kind (from the `gc` performance entries) — then starts over.
// Plain JavaScript so that it loads into any server, bundled or not.
import * as fs from "node:fs"
import { constants, monitorEventLoopDelay, performance, PerformanceObserver } from "node:perf_hooks"

const file = process.env.LOOP_PROBE_FILE
const KINDS = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: "minor",
  [constants.NODE_PERFORMANCE_GC_MAJOR]: "major",
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weakcb"
}

let delay = monitorEventLoopDelay({ resolution: 1 })
delay.enable()
let elu = performance.eventLoopUtilization()
/** @type {Array<{ kind: string, ms: number }>} */
let pauses = []
const gc = new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) pauses.push({ kind: KINDS[/** @type {{ detail?: { kind?: number } }} */ (entry).detail?.kind ?? -1] ?? "other", ms: entry.duration })
})
gc.observe({ entryTypes: ["gc"] })

/** @param {number} ns */
const ms = (ns) => Math.round(ns / 1e4) / 100
/** @param {Array<number>} values */
const summary = (values) => {
  const sorted = values.slice().sort((a, b) => a - b)
  /** @param {number} p */
  const at = (p) => sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0
  /** @param {number} x */
  const r = (x) => Math.round(x * 100) / 100
  return { count: sorted.length, totalMs: r(sorted.reduce((s, x) => s + x, 0)), p50Ms: r(at(50)), p99Ms: r(at(99)), maxMs: r(at(100)) }
}

process.on("SIGUSR2", () => {
  const since = performance.eventLoopUtilization(elu)
  /** @type {Record<string, ReturnType<typeof summary>>} */
  const byKind = {}
  for (const kind of new Set(pauses.map((p) => p.kind))) byKind[kind] = summary(pauses.filter((p) => p.kind === kind).map((p) => p.ms))
  const line = {
    loopDelay: {
      p50Ms: ms(delay.percentile(50)), p90Ms: ms(delay.percentile(90)), p99Ms: ms(delay.percentile(99)),
      p999Ms: ms(delay.percentile(99.9)), maxMs: ms(delay.max), samples: delay.count
    },
    utilisation: Math.round(since.utilization * 1000) / 1000,
    gc: byKind,
    // Pauses of 2 ms or more, in order: what could sit inside a slow round trip.
    longGcMs: pauses.filter((p) => p.ms >= 2).map((p) => `${p.kind}:${Math.round(p.ms * 10) / 10}`)
  }
  if (file !== undefined) fs.appendFileSync(file, `${JSON.stringify(line)}\n`)
  delay.disable()
  delay = monitorEventLoopDelay({ resolution: 1 })
  delay.enable()
  elu = performance.eventLoopUtilization()
  pauses = []
})
