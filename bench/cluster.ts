/**
 * `npm run bench:cluster` (CLUSTER.md §5): cluster mode against single-process mode, in one run
 * on one machine, on a real `redis-server` started here on a free loopback port.
 *
 *   node bench/cluster.ts [--rounds 3] [--frames 20000] [--claims 2000] [--part all|same|latency|frames|crossing]
 *     [--processes 2]
 *
 * 1. Both ends on one node: `bench/compare.ts` with the cluster-mode relay as A and the
 *    single-process relay as B (A B A B …, a fresh process each run, `--setup` for the upgrade
 *    rate): round trips/s, latency, server CPU per round trip, upgrades/s, and their ratios.
 * 2. What cluster mode adds to a claim and a phone registration: the Redis scripts' round trips
 *    (claim, register, unregister, release, expire), p50/p99, through the relay's own store.
 * 3. Redis commands per forwarded frame: one loadgen run against a cluster-mode relay, Redis's
 *    `total_commands_processed` during the run minus the idle rate (health, lease, sweep),
 *    divided by the frames the relay forwarded.
 * 4. Every pair crossing nodes (issue 15's load: 4 server-ids × 4 phones, 100 B, window 32):
 *    binaries on node B, phones on node A of a two-node cluster, against the same load on a
 *    single process — round trips/s and its ratio, p50/p99, lost/reordered/duplicated, and the
 *    Redis commands per crossing frame (each round trip is two frames). `--rounds` pairs (single,
 *    crossing), fresh processes each; the ratio of the medians, and each process's CPU per round
 *    trip. `--processes` load-generator processes (as `bench/loadgen.ts --processes`).
 *
 * Prints one JSON line per part and a final summary line.
 */
import { spawn } from "node:child_process"
import { parseArgs } from "node:util"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Redacted from "effect/Redacted"
import { createClient } from "redis"
import { makeClusterRedis } from "../src/cluster/ClusterRedis.ts"
import { clusterKeys } from "../src/cluster/Keys.ts"
import { redisOwnership } from "../src/cluster/Ownership.ts"
import { buildService, cpuMs, freePort, RELAY_ENTRY, RELAY_NODE_FLAGS, REPO_ROOT, runNodeScript, splitCommand, startServer, stopServer } from "./lib/proc.ts"
import { median, percentile, round } from "./lib/stats.ts"

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    frames: { type: "string", default: "20000" },
    claims: { type: "string", default: "2000" },
    part: { type: "string", default: "all" },
    processes: { type: "string", default: "2" }
  },
  strict: true
})

const LIMITS_OFF = "--rate-limit-burst 0 --max-connections-per-ip 0 --max-connections 100000"
const relayCommand = (extra: string) =>
  [
    "node_modules/.bin/node",
    ...RELAY_NODE_FLAGS,
    `${RELAY_ENTRY} --listen 127.0.0.1:{port} --metrics-listen 127.0.0.1:{metricsPort}`,
    LIMITS_OFF,
    extra
  ].join(" ")

const line = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`)

/** A redis-server without persistence on a free port; resolves once it answers. */
const startRedis = async () => {
  const port = await freePort()
  const child = spawn("redis-server", ["--port", `${port}`, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore"
  })
  const url = `redis://127.0.0.1:${port}`
  for (let i = 0; i < 100; i++) {
    const client = createClient({ url })
    client.on("error", () => {})
    const ok = await client.connect().then(() => client.ping()).then(() => true, () => false)
    await client.close().catch(() => {})
    if (ok) return { url, pid: child.pid, stop: () => child.kill("SIGKILL") }
    await new Promise((r) => setTimeout(r, 50))
  }
  child.kill("SIGKILL")
  throw new Error("redis-server did not start (is the Debian package redis-server installed?)")
}

/** Part 1: bench/compare.ts, cluster mode (A) against single-process mode (B). */
const sameNode = (redisUrl: string) =>
  new Promise<Record<string, unknown> | undefined>((resolve) => {
    const child = spawn(process.execPath, [
      "bench/compare.ts",
      "--rounds", values.rounds,
      "--frames", values.frames,
      "--setup",
      "--relay-cmd", relayCommand(`--cluster-redis ${redisUrl} --cluster-prefix bench-same`),
      "--baseline-cmd", relayCommand("")
    ], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "inherit"] })
    let out = ""
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString()
      process.stderr.write(d)
    })
    child.on("exit", () => {
      const last = out.trim().split("\n").pop()
      try {
        resolve(JSON.parse(last ?? "") as Record<string, unknown>)
      } catch {
        resolve(undefined)
      }
    })
  })

/** Part 2: the Redis round trips a claim and a registration add, through the relay's own store. */
const scriptLatency = (redisUrl: string, n: number) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function*() {
        const redis = yield* makeClusterRedis({ url: Redacted.make(redisUrl) })
        const store = redisOwnership(redis, clusterKeys("bench-scripts"), "bench", "token")
        const samples: Record<string, Array<number>> = { claim: [], register: [], unregister: [], release: [], expire: [] }
        const timed = <A, E>(name: string, effect: Effect.Effect<A, E>) =>
          Effect.gen(function*() {
            const start = yield* Clock.currentTimeNanos
            const result = yield* effect
            samples[name]!.push(Number((yield* Clock.currentTimeNanos) - start) / 1e6)
            return result
          })
        for (let i = 0; i < n; i++) {
          const serverId = `bench-${i}`
          const claim = yield* timed("claim", store.claim(serverId))
          const epoch = claim._tag === "Claimed" ? claim.epoch : ""
          yield* timed("register", store.register(serverId, `client-${serverId}-00000001`, 16, epoch, []))
          yield* timed("unregister", store.unregister(serverId, `client-${serverId}-00000001`))
          yield* timed("release", store.release(serverId, epoch, Duration.zero))
          yield* timed("expire", store.expire(serverId, epoch))
        }
        const stats: Record<string, { p50Ms: number; p99Ms: number }> = {}
        for (const [name, values] of Object.entries(samples)) {
          const sorted = Float64Array.from(values).sort()
          stats[name] = { p50Ms: round(percentile(sorted, 50)), p99Ms: round(percentile(sorted, 99)) }
        }
        return stats
      })
    ).pipe(Effect.provideService(Logger.CurrentLoggers, new Set()))
  )

const commandsProcessed = async (redisUrl: string): Promise<number> => {
  const client = createClient({ url: redisUrl })
  await client.connect()
  const info = await client.info("stats")
  await client.close()
  return Number(/total_commands_processed:(\d+)/.exec(info)?.[1] ?? Number.NaN)
}

const scrapeSum = async (metricsPort: number, name: string): Promise<number> => {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
  return text.split("\n").filter((l) => l.startsWith(`${name}{`)).reduce((sum, l) => sum + Number(l.split(" ").pop()), 0)
}

/** Part 3: Redis commands per forwarded frame, idle background taken out. */
const commandsPerFrame = async (redisUrl: string) => {
  const port = await freePort()
  const metricsPort = await freePort()
  const argv = splitCommand(
    relayCommand(`--cluster-redis ${redisUrl} --cluster-prefix bench-frames`).replaceAll("{port}", `${port}`).replaceAll("{metricsPort}", `${metricsPort}`)
  )
  const server = await startServer(argv, port, `${REPO_ROOT}/bench/out/cluster-frames.log`)
  try {
    const idle0 = await commandsProcessed(redisUrl)
    const idleStart = Date.now()
    await new Promise((r) => setTimeout(r, 3_000))
    const idleRate = (await commandsProcessed(redisUrl) - idle0) / (Date.now() - idleStart)
    const before = await commandsProcessed(redisUrl)
    const started = Date.now()
    const load = await runNodeScript("bench/loadgen.ts", [
      "--url", `ws://127.0.0.1:${port}`, "--servers", "4", "--phones", "4", "--frames", values.frames, "--warmup", "500"
    ], 300_000)
    const elapsed = Date.now() - started
    const commands = await commandsProcessed(redisUrl) - before
    const frames = await scrapeSum(metricsPort, "pyrycode_relay_frames_forwarded_total")
    const background = idleRate * elapsed
    return {
      ok: load.code === 0,
      framesForwarded: frames,
      redisCommands: commands,
      backgroundEstimate: round(background, 1),
      commandsPerFrame: round(Math.max(0, commands - background) / frames, 6),
      commandsPerFrameIncludingBackground: round(commands / frames, 6)
    }
  } finally {
    await stopServer(server)
  }
}

/** Part 4: binaries on B, phones on A, every frame through Redis; the same load on one process. */
const crossing = async (redisUrl: string, redisPid: number | undefined) => {
  const load = (binaryPort: number, phonePort: number) =>
    runNodeScript("bench/loadgen.ts", [
      "--url", `ws://127.0.0.1:${binaryPort}`, "--phone-url", `ws://127.0.0.1:${phonePort}`,
      "--servers", "4", "--phones", "4", "--bytes", "100", "--window", "32", "--frames", values.frames, "--warmup", "500",
      "--processes", values.processes
    ], 300_000).then((r): Record<string, number> => ({ ...(JSON.parse(r.stdout.trim().split("\n").pop() || "{}") as Record<string, number>), code: r.code }))
  const start = async (extra: string, name: string) => {
    const port = await freePort()
    const metricsPort = await freePort()
    const argv = splitCommand(relayCommand(extra).replaceAll("{port}", `${port}`).replaceAll("{metricsPort}", `${metricsPort}`))
    return { port, metricsPort, server: await startServer(argv, port, `${REPO_ROOT}/bench/out/cluster-${name}.log`) }
  }
  /** CPU ms per 1 000 round trips of each process, over one load run. */
  const perThousand = (before: Array<number>, after: Array<number>, roundTrips: number) =>
    after.map((v, i) => round((v - before[i]!) / Math.max(1, roundTrips) * 1000, 2))
  const singleRuns: Array<Record<string, number>> = []
  const crossRuns: Array<Record<string, number>> = []
  let redisCommands = 0
  let framesForwarded = 0
  for (let r = 0; r < Number(values.rounds); r++) {
    const single = await start("", "crossing-single")
    try {
      const pids = [single.server.child.pid]
      const before = pids.map(cpuMs)
      const result = await load(single.port, single.port)
      const [relay] = perThousand(before, pids.map(cpuMs), (result.roundTripsPerSec ?? 0) * (result.elapsedMs ?? 0) / 1000)
      singleRuns.push({ ...result, relayCpuMsPer1k: relay! })
    } finally {
      await stopServer(single.server)
    }
    const cluster = `--cluster-redis ${redisUrl} --cluster-prefix bench-crossing-${r}`
    const a = await start(`${cluster} --node-id bench-a`, "crossing-a")
    const b = await start(`${cluster} --node-id bench-b`, "crossing-b")
    try {
      await new Promise((res) => setTimeout(res, 1_500))
      const commandsBefore = await commandsProcessed(redisUrl)
      const pids = [a.server.child.pid, b.server.child.pid, redisPid]
      const before = pids.map(cpuMs)
      const result = await load(b.port, a.port)
      const [phonesNode, binariesNode, redis] = perThousand(before, pids.map(cpuMs), (result.roundTripsPerSec ?? 0) * (result.elapsedMs ?? 0) / 1000)
      redisCommands += await commandsProcessed(redisUrl) - commandsBefore
      framesForwarded += await scrapeSum(a.metricsPort, "pyrycode_relay_frames_forwarded_total") +
        await scrapeSum(b.metricsPort, "pyrycode_relay_frames_forwarded_total")
      crossRuns.push({ ...result, phonesNodeCpuMsPer1k: phonesNode!, binariesNodeCpuMsPer1k: binariesNode!, redisCpuMsPer1k: redis! })
    } finally {
      await stopServer(a.server)
      await stopServer(b.server)
    }
    process.stderr.write(`crossing round ${r + 1}: single ${singleRuns[r]!.roundTripsPerSec} rt/s, crossing ${crossRuns[r]!.roundTripsPerSec} rt/s\n`)
  }
  const mid = (runs: Array<Record<string, number>>, key: string) => median(runs.map((x) => x[key] ?? Number.NaN))
  return {
    crossing: crossRuns,
    singleProcess: singleRuns,
    roundTripsRatio: round(mid(crossRuns, "roundTripsPerSec") / mid(singleRuns, "roundTripsPerSec"), 3),
    p50Ms: { crossing: mid(crossRuns, "p50Ms"), singleProcess: mid(singleRuns, "p50Ms") },
    p99Ms: { crossing: mid(crossRuns, "p99Ms"), singleProcess: mid(singleRuns, "p99Ms") },
    lostReorderedDuplicated: crossRuns.reduce((n, x) => n + (x.lost ?? 0) + (x.reordered ?? 0) + (x.duplicated ?? 0), 0),
    redisCommands,
    framesForwarded,
    redisCommandsPerCrossingFrame: round(redisCommands / Math.max(1, framesForwarded), 4)
  }
}

const main = async () => {
  buildService()
  const redis = await startRedis()
  try {
    const wanted = (part: string) => values.part === "all" || values.part === part
    const same = wanted("same") ? await sameNode(redis.url) : undefined
    if (same !== undefined) line({ part: "same node: cluster mode (relay) vs single process (baseline)", ...same })
    const latency = wanted("latency") ? await scriptLatency(redis.url, Number(values.claims)) : undefined
    if (latency !== undefined) line({ part: "redis round trips added per transition (ms)", ...latency })
    const perFrame = wanted("frames") ? await commandsPerFrame(redis.url) : undefined
    if (perFrame !== undefined) line({ part: "redis commands per forwarded frame", ...perFrame })
    const cross = wanted("crossing") ? await crossing(redis.url, redis.pid) : undefined
    if (cross !== undefined) line({ part: "every pair crossing nodes (phones on A, binaries on B) vs single process", ...cross })
    line({ summary: "bench:cluster", sameNode: same, latency, perFrame, crossing: cross })
  } finally {
    redis.stop()
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench:cluster: ${e instanceof Error ? e.message : String(e)}\n`)
    process.exit(1)
  }
)
