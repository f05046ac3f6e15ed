/**
 * Heap and RSS per idle connection: opens N idle connections (half binaries, half phones: N/2
 * server-ids with one binary and one phone each, every phone proven routed by one echoed hello)
 * to the relay, then in a separate run to the baseline, holds them for several heartbeat periods
 * and prints one JSON line per server.
 *
 *   node bench/idle-memory.ts [--connections 10000] [--hold 15] [--processes 2]
 *     [--only relay|baseline] [--snapshot]
 *
 * The server runs under bench/lib/heap-probe.ts (`node --expose-gc`), which answers SIGUSR2 with a
 * full GC and its `process.memoryUsage()`; RSS is VmRSS from /proc/<pid>/status. "Before" is taken
 * after a warm-up (32 pairs connected and closed again, so code compiled for the connection path
 * is not billed to the connections). The relay runs with `--heartbeat-interval 5s
 * --heartbeat-timeout 5s`; the hold (default 15 s) must see at least 2 pings on every relay
 * connection and every connection still open, otherwise exit 1. The baseline has no heartbeat.
 * KB = 1024 bytes, MB = 1024 KB. Clients are spread over --processes forked children; the fd limit
 * is raised by re-running this script under `bash -c "ulimit -n …"` when it is too low.
 * --snapshot also writes heap snapshots before/after into bench/out/ (compare them with
 * `node bench/heap-top.ts <before> <after> --per N`).
 */
import { fork, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { LoadWorker, type WorkerOpts } from "./lib/loadworker.ts"
import { probeHeap, rssKB } from "./lib/memory.ts"
import { buildService, freePort, RELAY_ENTRY, RELAY_NODE_FLAGS, REPO_ROOT, startServer, stopServer } from "./lib/proc.ts"
import { round } from "./lib/stats.ts"

// The relay as `npm start` runs it: the service bundle, built from the current sources.
buildService()

const { values } = parseArgs({
  options: {
    connections: { type: "string", default: "10000" },
    hold: { type: "string", default: "15" },
    processes: { type: "string", default: "2" },
    only: { type: "string" },
    snapshot: { type: "boolean", default: false },
    child: { type: "boolean", default: false },
    url: { type: "string" },
    servers: { type: "string", default: "0" }
  },
  strict: true
})

const NODE_BIN = path.join(REPO_ROOT, "node_modules", ".bin", "node")
const HEARTBEAT_S = 5
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const withTimeout = <A>(p: Promise<A>, ms: number, what: string): Promise<A> =>
  Promise.race([p, sleep(ms).then((): never => { throw new Error(`timeout: ${what}`) })])

type ToChild = { type: "status" } | { type: "close" }
type FromChild =
  | { type: "ready"; count: number; connectMs: number }
  | { type: "status"; open: number; total: number; minPings: number; maxPings: number }
  | { type: "error"; message: string }

// ---------------------------------------------------------------- child: holds the sockets
const runChild = async (): Promise<void> => {
  const send = (m: FromChild): void => void process.send?.(m)
  const opts: WorkerOpts = { url: values.url ?? "", servers: Number(values.servers), phones: 1, frames: 1, warmup: 0, bytes: 16, window: 1, connectConcurrency: 32 }
  const worker = new LoadWorker(opts)
  const t0 = performance.now()
  try {
    await withTimeout(worker.connect(), 300_000, "connect")
  } catch (e) {
    send({ type: "error", message: String(e) })
    process.exit(1)
  }
  const sockets = worker.sockets()
  const pings = new Uint32Array(sockets.length)
  sockets.forEach((ws, i) => ws.on("ping", () => pings[i]!++))
  process.on("message", (m: ToChild) => {
    if (m.type === "status") {
      const open = sockets.filter((ws) => ws.readyState === ws.OPEN).length
      send({ type: "status", open, total: sockets.length, minPings: Math.min(...pings), maxPings: Math.max(...pings) })
    } else {
      void worker.close().then(() => process.exit(0))
    }
  })
  send({ type: "ready", count: sockets.length, connectMs: performance.now() - t0 })
  setTimeout(() => process.exit(1), 900_000).unref() // orphan guard
}

// ---------------------------------------------------------------- parent
/** Re-run under a raised `ulimit -n` when the soft limit is too low for the server's sockets. */
const ensureFdLimit = (need: number): void => {
  const m = /Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/.exec(fs.readFileSync("/proc/self/limits", "utf8"))
  const soft = m?.[1] === "unlimited" ? Infinity : Number(m?.[1] ?? 1024)
  const hard = m?.[2] === "unlimited" ? Infinity : Number(m?.[2] ?? 1024)
  if (soft >= need) return
  if (hard < need || process.env["IDLE_MEMORY_REEXEC"] === "1") {
    process.stderr.write(`idle-memory: need ${need} open files, limit is ${soft} (hard ${hard}); use fewer --connections\n`)
    process.exit(2)
  }
  const target = Math.min(65536, hard)
  const r = spawnSync("bash", ["-c", `ulimit -n ${target} && exec "$0" "$@"`, process.execPath, ...process.execArgv, import.meta.filename, ...process.argv.slice(2)], {
    stdio: "inherit",
    env: { ...process.env, IDLE_MEMORY_REEXEC: "1" }
  })
  process.exit(r.status ?? 1)
}

/** Talk to all children: send `msg` (if any) and collect one reply of `kind` from each. */
const collect = <K extends FromChild["type"]>(children: ReadonlyArray<ReturnType<typeof fork>>, kind: K, msg?: ToChild): Promise<Array<Extract<FromChild, { type: K }>>> =>
  Promise.all(children.map((c) => new Promise<Extract<FromChild, { type: K }>>((resolve, reject) => {
    const onExit = (code: number | null): void => reject(new Error(`client process exited (${code}) before ${kind}`))
    const onMsg = (m: FromChild): void => {
      if (m.type === "error") reject(new Error(m.message))
      if (m.type !== kind) return
      c.off("message", onMsg)
      c.off("exit", onExit)
      resolve(m as Extract<FromChild, { type: K }>)
    }
    c.on("message", onMsg)
    c.once("exit", onExit)
    if (msg !== undefined) c.send(msg)
  })))

type Side = "relay" | "baseline"

const serverArgv = (side: Side, port: number): Array<string> => {
  const pre = [NODE_BIN, "--expose-gc", "bench/lib/heap-probe.ts"]
  const listen = `127.0.0.1:${port}`
  return side === "relay"
    ? [NODE_BIN, ...RELAY_NODE_FLAGS, ...pre.slice(1), RELAY_ENTRY, "--listen", listen, "--metrics-listen", "", "--rate-limit-burst", "0", "--max-connections-per-ip", "0", "--max-connections", "100000", "--heartbeat-interval", `${HEARTBEAT_S}s`, "--heartbeat-timeout", `${HEARTBEAT_S}s`]
    : [...pre, "bench/baseline.ts", "--listen", listen]
}

const MB = 1024 * 1024

const measure = async (side: Side, connections: number, holdS: number, processes: number): Promise<boolean> => {
  const port = await freePort()
  const outDir = path.join(REPO_ROOT, "bench", "out")
  const probeFile = path.join(outDir, `heap-probe-${side}-${port}.json`)
  process.env["HEAP_PROBE_FILE"] = probeFile
  if (values.snapshot) process.env["HEAP_PROBE_SNAPSHOT_DIR"] = outDir
  const server = await startServer(serverArgv(side, port), port, path.join(outDir, `idle-memory-${side}.log`))
  const pid = server.child.pid ?? 0
  const url = `ws://127.0.0.1:${port}`
  const children: Array<ReturnType<typeof fork>> = []
  try {
    const warm = new LoadWorker({ url, servers: 32, phones: 1, frames: 1, warmup: 0, bytes: 16, window: 1, connectConcurrency: 32 })
    await withTimeout(warm.connect(), 60_000, "warm-up connect")
    await warm.close()
    await sleep(1000)
    const before = await probeHeap(pid, probeFile)
    const rssBefore = rssKB(pid)
    const ids = Math.floor(connections / 2)
    for (let i = 0; i < processes; i++) {
      const share = Math.floor(ids / processes) + (i < ids % processes ? 1 : 0)
      children.push(fork(import.meta.filename, ["--child", "--url", url, "--servers", `${share}`], { stdio: ["ignore", "inherit", "inherit", "ipc"] }))
    }
    const ready = await withTimeout(collect(children, "ready"), 330_000, "clients connecting")
    const opened = ready.reduce((a, r) => a + r.count, 0)
    const connectSeconds = Math.max(...ready.map((r) => r.connectMs)) / 1000
    await sleep(holdS * 1000)
    const status = await withTimeout(collect(children, "status", { type: "status" }), 30_000, "status")
    const after = await probeHeap(pid, probeFile)
    const rssAfter = rssKB(pid)
    const open = status.reduce((a, s) => a + s.open, 0)
    const minPings = Math.min(...status.map((s) => s.minPings))
    const maxPings = Math.max(...status.map((s) => s.maxPings))
    const heartbeatOk = side === "baseline" || minPings >= 2
    const ok = open === opened && opened === ids * 2 && heartbeatOk && before.gc
    const perConnKB = (bytes: number): number => round(bytes / opened / 1024, 2)
    process.stdout.write(`${JSON.stringify({
      server: side,
      connections: opened,
      heapBeforeMB: round(before.heapUsed / MB, 1),
      heapAfterMB: round(after.heapUsed / MB, 1),
      heapPerConnKB: perConnKB(after.heapUsed - before.heapUsed),
      rssBeforeMB: round(rssBefore / 1024, 1),
      rssAfterMB: round(rssAfter / 1024, 1),
      rssPerConnKB: perConnKB((rssAfter - rssBefore) * 1024),
      connectSeconds: round(connectSeconds, 2),
      externalPerConnKB: perConnKB(after.external - before.external),
      upgradesPerSec: round(opened / connectSeconds, 0),
      holdSeconds: holdS,
      stillOpen: open,
      pingsPerConnMin: minPings,
      pingsPerConnMax: maxPings,
      ok,
      ...(values.snapshot ? { snapshotBefore: before.snapshot, snapshotAfter: after.snapshot } : {})
    })}\n`)
    if (!ok) process.stderr.write(`idle-memory: ${side}: ${open}/${opened} open of ${ids * 2}, min pings ${minPings}, gc ${before.gc}\n`)
    const exited = children.map((c) => new Promise<void>((r) => (c.exitCode === null ? c.once("exit", () => r()) : r())))
    for (const c of children) c.send({ type: "close" } satisfies ToChild)
    await Promise.race([Promise.all(exited), sleep(15_000)])
    return ok
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL")
    await stopServer(server)
  }
}

const main = async (): Promise<number> => {
  const connections = Number(values.connections)
  const holdS = Number(values.hold)
  const processes = Number(values.processes)
  if (!Number.isInteger(connections) || connections < 2 || connections > 60_000) throw new Error("--connections must be 2..60000")
  if (!Number.isInteger(processes) || processes < 1 || processes > 16) throw new Error("--processes must be 1..16")
  if (!(holdS > 2 * HEARTBEAT_S)) throw new Error(`--hold must exceed two heartbeat intervals (${2 * HEARTBEAT_S} s)`)
  ensureFdLimit(connections + 1024)
  const sides: Array<Side> = values.only === "relay" || values.only === "baseline" ? [values.only] : ["relay", "baseline"]
  let ok = true
  for (const side of sides) ok = (await measure(side, connections, holdS, processes)) && ok
  return ok ? 0 : 1
}

if (values.child) void runChild()
else {
  setTimeout(() => {
    process.stderr.write("idle-memory: hard timeout\n")
    process.exit(1)
  }, 1_800_000).unref()
  main().then((code) => process.exit(code), (e: unknown) => {
    process.stderr.write(`idle-memory: ${e instanceof Error ? e.message : String(e)}\n`)
    process.exit(1)
  })
}
