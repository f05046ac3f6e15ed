/**
 * Memory bound (SPEC §4.4, §7.4): sends 100 MB towards phones that stopped reading, and 100 MB
 * from phones towards a binary that stopped reading, and prints the relay's RSS before, at its
 * peak, and after each run. No assertion: this prints numbers to compare (machines are noisy).
 * Each fresh process first carries --warmup MB (default 100) of the same frames between peers
 * that read, so "before" is the working size, not a just-started process.
 *
 *   node bench/stalled-rss.ts [--mb 100] [--warmup 100] [--relay-cmd "<node> <npm start's V8 flags> dist/service/relay.mjs"] [--heap]
 *     [--baseline]
 *
 * --baseline runs the same scenarios against bench/baseline.ts instead (for comparison; no
 * counters, and --heap works the same).
 *
 * --heap runs the relay under bench/lib/heap-probe.ts (`node --expose-gc`) and also prints its heap
 * after a full GC before and 3 s after each run (heapBeforeGcMB, heapAfterGcMB): what is really
 * retained, as opposed to RSS, which also holds heap capacity V8 grew for garbage and keeps.
 */
import { readFileSync } from "node:fs"
import * as path from "node:path"
import WebSocket from "ws"
import { probeHeap } from "./lib/memory.ts"
import { buildService, freePort, RELAY_ENTRY, RELAY_NODE_FLAGS, REPO_ROOT, splitCommand, startServer, stopServer } from "./lib/proc.ts"
import { rawUpgrade, textFrame } from "./lib/raw.ts"

// The relay as `npm start` runs it: the service bundle, built from the current sources.
buildService()

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i === -1 ? fallback : process.argv[i + 1] ?? fallback
}
const TOTAL = Number(arg("mb", "100")) * 1_000_000
const HEAP = process.argv.includes("--heap")
/** MB sent to peers that do read, before "before" is taken: brings the heap to its working size. */
const WARMUP = Number(arg("warmup", "100")) * 1_000_000
const BASELINE = process.argv.includes("--baseline")
const RELAY = BASELINE
  ? "node_modules/.bin/node bench/baseline.ts"
  : arg("relay-cmd", ["node_modules/.bin/node", ...RELAY_NODE_FLAGS, RELAY_ENTRY].join(" "))
/** With --heap: `<node> --expose-gc bench/lib/heap-probe.ts <rest of the relay command>`. */
const relayArgv = (): Array<string> => {
  const [node = "node", ...rest] = splitCommand(RELAY)
  if (!HEAP) return [node, ...rest]
  // node's own flags stay before the probe script; the relay's script and arguments follow it.
  const script = rest.findIndex((a) => !a.startsWith("-"))
  return [node, ...rest.slice(0, script), "--expose-gc", "bench/lib/heap-probe.ts", ...rest.slice(script)]
}
const heapMb = async (pid: number, port: number): Promise<number> => {
  if (!HEAP) return Number.NaN
  const probe = await probeHeap(pid, path.join(REPO_ROOT, "bench", "out", `stalled-rss-heap-${port}.json`))
  return Math.round(probe.heapUsed / 104857.6) / 10
}

const rssMb = (pid: number): number => {
  let status: string
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8")
  } catch {
    return Number.NaN // the relay is gone
  }
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? "0")
  return Math.round(kb / 102.4) / 10
}

const dial = (url: string, headers: Record<string, string>): Promise<WebSocket> =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false })
    ws.once("open", () => resolve(ws))
    ws.once("error", reject)
  })
const binaryHeaders = (id: string) => ({ "X-Pyrycode-Server": id, "X-Pyrycode-Version": "bench", "User-Agent": "bench" })
const phoneHeaders = (id: string) => ({ "X-Pyrycode-Server": id, "X-Pyrycode-Token": "t", "User-Agent": "bench" })
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Waits until the client's own send buffer drains below 1 MB (so we measure the relay, not us). */
const drainClient = async (ws: WebSocket) => {
  while (ws.readyState === WebSocket.OPEN && ws.bufferedAmount > 1_000_000) await sleep(5)
}

const FRAME = `"${"x".repeat(64 * 1024 - 2)}"`

type Progress = (sent: number) => void

/**
 * The same traffic as the scenarios, towards peers that read: half of WARMUP from a binary to 16
 * phones, half from those phones to the binary. A fresh process has not yet grown its heap to the
 * size this traffic needs (V8 grows its young generation on the first busy seconds, stalled or
 * not); "before" is taken after this, so the runs measure what stalled readers add.
 */
const warmUp = async (base: string) => {
  if (WARMUP === 0) return
  const binary = await dial(`${base}/v1/server`, binaryHeaders("warm-up"))
  const connIds: Array<string> = []
  let binaryReceived = 0
  binary.on("message", (m: Buffer) => {
    binaryReceived += m.length
    const e = JSON.parse(m.toString()) as { conn_id: string; frame?: unknown }
    if (e.frame !== undefined && !connIds.includes(e.conn_id)) connIds.push(e.conn_id)
  })
  const phones = await Promise.all(Array.from({ length: 16 }, () => dial(`${base}/v1/client`, phoneHeaders("warm-up"))))
  let received = 0
  for (const phone of phones) {
    phone.on("message", (m: Buffer) => (received += m.length))
    phone.send("0")
  }
  while (connIds.length < phones.length) await sleep(5)
  const ones = `{"conn_id":"`
  let sent = 0
  for (let i = 0; sent < WARMUP / 2; i++) {
    binary.send(`${ones}${connIds[i % connIds.length]}","frame":${FRAME}}`)
    sent += FRAME.length
    if (i % 16 === 15) await drainClient(binary)
  }
  while (received < sent) await sleep(5)
  // Towards the binary, at most ~2 MB in flight: the binary's 4 MiB budget must not end a phone.
  const towardsBinary = sent
  for (let i = 0; sent < WARMUP; i++) {
    phones[i % phones.length]!.send(FRAME)
    sent += FRAME.length
    while (sent - towardsBinary - binaryReceived > 2_000_000) await sleep(1)
  }
  while (sent - towardsBinary > binaryReceived) await sleep(5)
  for (const p of phones) p.close()
  binary.close()
  await sleep(1000)
}

/** A binary floods `count` phones that never read. */
const towardsStalledPhones = (count: number) => async (base: string, progress: Progress) => {
  const binary = await dial(`${base}/v1/server`, binaryHeaders("stalled-phones"))
  const connIds: Array<string> = []
  binary.on("message", (m: Buffer) => {
    const e = JSON.parse(m.toString()) as { conn_id: string; frame?: unknown }
    if (e.frame !== undefined) connIds.push(e.conn_id)
  })
  const port = Number(new URL(base).port)
  const phones = await Promise.all(
    Array.from({ length: count }, () => rawUpgrade(port, "/v1/client", phoneHeaders("stalled-phones")))
  )
  for (const phone of phones) phone.write(textFrame("0"))
  while (connIds.length < phones.length) await sleep(5)
  let sent = 0
  let i = 0
  while (sent < TOTAL) {
    const envelope = `{"conn_id":"${connIds[i++ % connIds.length]}","frame":${FRAME}}`
    binary.send(envelope)
    sent += FRAME.length
    progress(sent)
    if (i % 16 === 0) await drainClient(binary)
  }
  await drainClient(binary)
  await sleep(1000)
  progress(sent)
  for (const p of phones) p.destroy()
  binary.close()
  return { stalledPhones: count, sentMB: Math.round(sent / 1e6) }
}

/** 16 phones flood a binary that never reads; a phone that is ended redials until 100 MB went out. */
const towardsStalledBinary = async (base: string, progress: Progress) => {
  const binary = await rawUpgrade(Number(new URL(base).port), "/v1/server", binaryHeaders("stalled-binary"))
  let sent = 0
  const flood = async () => {
    while (sent < TOTAL) {
      const phone = await dial(`${base}/v1/client`, phoneHeaders("stalled-binary"))
      while (phone.readyState === WebSocket.OPEN && sent < TOTAL) {
        phone.send(FRAME)
        sent += FRAME.length
        progress(sent)
        await drainClient(phone)
        await sleep(0)
      }
      phone.terminate()
    }
  }
  await Promise.all(Array.from({ length: 16 }, flood))
  await sleep(1000)
  progress(sent)
  binary.destroy()
  return { sentMB: Math.round(sent / 1e6) }
}

/** The relay's own account of what happened (the baseline prints nothing here). */
const scrapeCounters = async (port: number): Promise<Record<string, number>> => {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    const out: Record<string, number> = {}
    for (const line of text.split("\n")) {
      const m = /^pyrycode_relay_(frames_forwarded_total|frames_dropped_total)\{(.*)\} (\d+)$/.exec(line)
      if (m && m[3] !== "0") out[`${m[1]}{${m[2]!.replace(/"/g, "")}}`] = Number(m[3])
    }
    return out
  } catch {
    return {}
  }
}

const run = async (name: string, scenario: (base: string, progress: Progress) => Promise<Record<string, number>>) => {
  const port = await freePort()
  const metricsPort = await freePort()
  process.env["HEAP_PROBE_FILE"] = path.join(REPO_ROOT, "bench", "out", `stalled-rss-heap-${port}.json`)
  const relay = await startServer(
    [
      ...relayArgv(),
      "--listen",
      `127.0.0.1:${port}`,
      ...(BASELINE ? [] : ["--metrics-listen", `127.0.0.1:${metricsPort}`, "--rate-limit-burst", "0"])
    ],
    port,
    `bench/out/stalled-rss-${port}.log`
  )
  await sleep(500)
  await warmUp(`ws://127.0.0.1:${port}`)
  const pid = relay.child.pid!
  const heapBefore = await heapMb(pid, port)
  const before = rssMb(pid)
  let peak = before
  const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 50)
  const started = Date.now()
  /** RSS when 10 %, 25 %, 50 %, 75 % and 100 % of the bytes have gone out: flat = bounded. */
  const checkpoints: Record<string, number> = {}
  const marks = [0.1, 0.25, 0.5, 0.75, 1]
  const progress: Progress = (sent) => {
    while (marks.length > 0 && sent >= marks[0]! * TOTAL) {
      checkpoints[`rssAt${Math.round(marks.shift()! * 100)}pctMB`] = rssMb(pid)
    }
  }
  const countersBefore = await scrapeCounters(metricsPort) // the warm-up's, subtracted below
  const result = await scenario(`ws://127.0.0.1:${port}`, progress)
  clearInterval(sampler)
  const after = rssMb(pid)
  const heapAfter = HEAP ? await sleep(3000).then(() => heapMb(pid, port)) : Number.NaN // peers gone 3 s
  const counters = Object.fromEntries(
    Object.entries(await scrapeCounters(metricsPort))
      .map(([name, n]) => [name, n - (countersBefore[name] ?? 0)] as const)
      .filter(([, n]) => n !== 0)
  )
  await stopServer(relay)
  console.log(JSON.stringify({
    server: BASELINE ? "baseline" : "relay",
    scenario: name,
    ...result,
    seconds: Math.round((Date.now() - started) / 100) / 10,
    rssBeforeMB: before,
    ...checkpoints,
    rssPeakMB: peak,
    rssAfterMB: after,
    ...(HEAP ? { heapBeforeGcMB: heapBefore, heapAfterGcMB: heapAfter } : {}),
    ...counters
  }))
}

await run("towards one stalled phone", towardsStalledPhones(1))
await run("towards 16 stalled phones", towardsStalledPhones(16))
await run("towards a stalled binary", towardsStalledBinary)
