/**
 * Load generator: K echoing binaries, P phones per server-id, N frames of ~B bytes per phone with at
 * most W in flight; checks every echo (complete, in order, exactly once) and prints one JSON line.
 *
 *   node bench/loadgen.ts --url ws://127.0.0.1:PORT [--phone-url ws://127.0.0.1:PORT2] --servers K --phones P --frames N --bytes B \
 *     --window W [--processes C] [--warmup 500] [--timeout 120] [--stall 15]
 *     [--flush immediate|microtask|sync] [--connect-concurrency 32]
 *
 * Exit 0 only when nothing was lost, reordered, duplicated or corrupted, no socket closed under
 * load, and nothing timed out. With --processes C > 1 the server-ids are split across C forked
 * children (started together once all are connected and warmed up); latency percentiles come from
 * all samples. --warmup frames per phone go through the same checks first but are not measured.
 */
import { fork } from "node:child_process"
import { performance } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { makeArgChecks } from "./lib/args.ts"
import { parseFlushMode, setFlushMode } from "./lib/batch.ts"
import { LoadWorker, type WorkerOpts, type WorkerResult } from "./lib/loadworker.ts"
import { mergeSorted, percentile, round } from "./lib/stats.ts"

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    "phone-url": { type: "string" },
    servers: { type: "string", default: "4" },
    phones: { type: "string", default: "4" },
    frames: { type: "string", default: "5000" },
    warmup: { type: "string", default: "500" },
    bytes: { type: "string", default: "100" },
    window: { type: "string", default: "32" },
    processes: { type: "string", default: "1" },
    timeout: { type: "string", default: "120" },
    stall: { type: "string", default: "15" },
    flush: { type: "string", default: "immediate" },
    "connect-concurrency": { type: "string", default: "32" },
    child: { type: "boolean", default: false }
  },
  strict: true
})

const { int, loopbackUrl } = makeArgChecks("loadgen")
const url = loopbackUrl(values.url)
const phoneUrl = values["phone-url"] === undefined ? undefined : loopbackUrl(values["phone-url"])
const opts: WorkerOpts = {
  url,
  ...(phoneUrl === undefined ? {} : { phoneUrl }),
  servers: int("servers", values.servers, 1),
  phones: int("phones", values.phones, 1),
  frames: int("frames", values.frames, 1),
  warmup: int("warmup", values.warmup, 0),
  bytes: int("bytes", values.bytes, 1),
  window: int("window", values.window, 1),
  connectConcurrency: int("connect-concurrency", values["connect-concurrency"], 1)
}
const processes = Math.min(int("processes", values.processes, 1), opts.servers)
const timeoutMs = int("timeout", values.timeout, 1) * 1000
const stallMs = int("stall", values.stall, 1) * 1000
setFlushMode(parseFlushMode(values.flush, "immediate"))
const deadline = Date.now() + timeoutMs

// Last resort: whatever happens, this process ends shortly after the deadline.
setTimeout(() => {
  process.stderr.write("loadgen: hard timeout\n")
  process.exit(1)
}, timeoutMs + 10_000).unref()

interface Outcome extends WorkerResult {
  timedOut: boolean
}

/** Run the load on a connected worker until done, the deadline, or no progress for --stall. */
const execute = (w: LoadWorker, frames: number): Promise<boolean> =>
  new Promise((resolve) => {
    let last = -1
    let lastChange = Date.now()
    const timer = setInterval(() => {
      const p = w.progress()
      if (p !== last) {
        last = p
        lastChange = Date.now()
      }
      if (Date.now() >= deadline || Date.now() - lastChange >= stallMs) {
        clearInterval(timer)
        resolve(true)
      }
    }, 250)
    void w.run(frames).then(() => {
      clearInterval(timer)
      resolve(false)
    })
  })

/** Unmeasured warm-up run; returns a failed outcome to report, or undefined when it went clean. */
const warmUp = async (w: LoadWorker): Promise<Outcome | undefined> => {
  if (opts.warmup === 0) return undefined
  const timedOut = await execute(w, opts.warmup)
  const r = w.result()
  const bad = timedOut || r.lost + r.reordered + r.duplicated + r.corrupted + r.unexpectedCloses > 0
  return bad ? { ...r, timedOut } : undefined
}

/** Give late duplicates a moment to show up before counting. */
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 100))

const withDeadline = <A>(p: Promise<A>, what: string): Promise<A> =>
  Promise.race([
    p,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`timeout during ${what}`)), Math.max(0, deadline - Date.now())).unref()
    )
  ])

const report = (parts: ReadonlyArray<Outcome>, elapsedMs: number, connectMs: number): number => {
  const sorted = mergeSorted(parts.map((p) => p.samples))
  const sum = (f: (o: Outcome) => number): number => parts.reduce((a, o) => a + f(o), 0)
  const out = {
    roundTripsPerSec: round(sum((o) => o.received) / (elapsedMs / 1000), 1),
    p50Ms: round(percentile(sorted, 50)),
    p99Ms: round(percentile(sorted, 99)),
    lost: sum((o) => o.lost),
    reordered: sum((o) => o.reordered),
    duplicated: sum((o) => o.duplicated),
    corrupted: sum((o) => o.corrupted),
    elapsedMs: round(elapsedMs, 1),
    servers: opts.servers,
    phones: opts.phones,
    frames: opts.frames,
    bytes: opts.bytes,
    window: opts.window,
    processes,
    received: sum((o) => o.received),
    p90Ms: round(percentile(sorted, 90)),
    p999Ms: round(percentile(sorted, 99.9)),
    maxMs: round(percentile(sorted, 100)),
    unexpectedCloses: sum((o) => o.unexpectedCloses),
    timedOut: parts.some((o) => o.timedOut),
    connectMs: round(connectMs, 1)
  }
  process.stdout.write(`${JSON.stringify(out)}\n`)
  const bad = out.lost + out.reordered + out.duplicated + out.corrupted + out.unexpectedCloses
  return bad > 0 || out.timedOut ? 1 : 0
}

/** In-process run (C = 1). */
const runLocal = async (): Promise<number> => {
  const w = new LoadWorker(opts)
  const t0 = performance.now()
  await withDeadline(w.connect(), "connect")
  const t1 = performance.now()
  const failed = await warmUp(w)
  if (failed !== undefined) {
    process.stderr.write("loadgen: warm-up failed\n")
    const code = report([failed], performance.now() - t1, t1 - t0)
    await w.close()
    return code
  }
  const t2 = performance.now()
  const timedOut = await execute(w, opts.frames)
  const elapsed = performance.now() - t2
  await settle()
  const code = report([{ ...w.result(), timedOut }], elapsed, t1 - t0)
  await w.close()
  return code
}

type ToChild = { type: "go" }
type FromChild =
  | { type: "ready" }
  | { type: "done" }
  | { type: "result"; outcome: Outcome }
  | { type: "error"; message: string }

/** Child side (--child): connect, report ready, run on "go", report done + result. */
const runChild = async (): Promise<number> => {
  const send = (m: FromChild): Promise<void> =>
    new Promise((resolve) => {
      if (process.send === undefined || !process.connected) return resolve()
      process.send(m, undefined, {}, () => resolve())
    })
  const w = new LoadWorker(opts)
  try {
    await withDeadline(w.connect(), "connect")
  } catch (e) {
    await send({ type: "error", message: String(e) })
    return 1
  }
  const failed = await warmUp(w)
  if (failed !== undefined) {
    await send({ type: "error", message: "warm-up failed" })
    return 1
  }
  await new Promise<void>((resolve) => {
    process.once("message", (m: ToChild) => m.type === "go" && resolve())
    void send({ type: "ready" })
  })
  const timedOut = await execute(w, opts.frames)
  await send({ type: "done" })
  await settle()
  await send({ type: "result", outcome: { ...w.result(), timedOut } })
  await w.close()
  return 0
}

/** Parent side (C > 1): fork C children with a share of the server-ids each, start them together. */
const runParent = async (): Promise<number> => {
  const t0 = performance.now()
  const base = Math.floor(opts.servers / processes)
  const extra = opts.servers % processes
  const passthrough = ["--url", url, ...(phoneUrl === undefined ? [] : ["--phone-url", phoneUrl]), "--phones", `${opts.phones}`, "--frames", `${opts.frames}`, "--warmup", `${opts.warmup}`, "--bytes", `${opts.bytes}`, "--window", `${opts.window}`, "--timeout", `${Math.ceil(timeoutMs / 1000)}`, "--stall", `${Math.ceil(stallMs / 1000)}`, "--flush", values.flush, "--connect-concurrency", `${opts.connectConcurrency}`]
  const children = Array.from({ length: processes }, (_, i) =>
    fork(import.meta.filename, [...passthrough, "--servers", `${base + (i < extra ? 1 : 0)}`, "--child"], {
      serialization: "advanced",
      stdio: ["ignore", "inherit", "inherit", "ipc"]
    })
  )
  const waitAll = (kind: FromChild["type"]): Promise<Array<FromChild>> =>
    Promise.all(
      children.map(
        (c) =>
          new Promise<FromChild>((resolve, reject) => {
            const onExit = (code: number | null): void => reject(new Error(`child exited (${code}) before ${kind}`))
            const onMsg = (m: FromChild): void => {
              if (m.type === "error") reject(new Error(m.message))
              else if (m.type === kind) {
                c.off("message", onMsg)
                c.off("exit", onExit)
                resolve(m)
              }
            }
            c.on("message", onMsg)
            c.once("exit", onExit)
          })
      )
    )
  try {
    await withDeadline(waitAll("ready"), "connect")
    const results = waitAll("result")
    const done = waitAll("done")
    results.catch(() => {}) // awaited below; avoid an unhandled rejection while waiting for "done"
    const t1 = performance.now()
    for (const c of children) c.send({ type: "go" } satisfies ToChild)
    await withDeadline(done, "load")
    const elapsed = performance.now() - t1
    const outcomes = (await withDeadline(results, "results")).flatMap((m) => (m.type === "result" ? [m.outcome] : []))
    return report(outcomes, elapsed, t1 - t0)
  } catch (e) {
    process.stderr.write(`loadgen: ${String(e)}\n`)
    for (const c of children) c.kill("SIGKILL")
    return 1
  }
}

const main = values.child ? runChild : processes > 1 ? runParent : runLocal
main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`loadgen: ${e instanceof Error ? e.message : String(e)}\n`)
    process.exit(1)
  }
)
