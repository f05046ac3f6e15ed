/**
 * One load-generating process: K echoing binaries and P phones per server-id, each phone pushing
 * N frames with at most W in flight and checking that every echo comes back whole, in order, once.
 */
import { randomBytes } from "node:crypto"
import { performance } from "node:perf_hooks"
import { WebSocket } from "ws"
import { Outbox } from "./batch.ts"
import { binaryHeaders, openSocket, phoneHeaders, pool } from "./dial.ts"

export interface WorkerOpts {
  readonly url: string
  /** Where phones dial (another relay node of a cluster: every pair then crosses nodes); `url` by default. */
  readonly phoneUrl?: string
  readonly servers: number
  readonly phones: number
  readonly frames: number
  /** Unmeasured frames per phone sent before the measured run (JIT/GC warm-up). */
  readonly warmup: number
  readonly bytes: number
  readonly window: number
  readonly connectConcurrency: number
}

export interface WorkerResult {
  received: number
  lost: number
  reordered: number
  duplicated: number
  corrupted: number
  unexpectedCloses: number
  samples: Float64Array
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Binary that echoes every envelope carrying a frame verbatim (`{"conn_id":X,"frame":F}` back). */
const startEchoBinary = (ws: WebSocket): Outbox => {
  const out = new Outbox(ws)
  ws.on("message", (data: Buffer) => {
    if (data.indexOf('"frame":') >= 0) out.send(data) // close notices carry no frame: ignored
  })
  return out
}

const SEQ_PREFIX = '{"seq":'

const parseSeq = (text: string): number => {
  if (!text.startsWith(SEQ_PREFIX)) return -1
  let n = 0
  let i = SEQ_PREFIX.length
  for (; i < text.length && i < SEQ_PREFIX.length + 12; i++) {
    const c = text.charCodeAt(i) - 48
    if (c < 0 || c > 9) break
    n = n * 10 + c
  }
  return i > SEQ_PREFIX.length && text.charCodeAt(i) === 0x2c ? n : -1
}

class Phone {
  readonly ws: WebSocket
  readonly out: Outbox
  /** Frames in the current run. */
  target = 0
  sent = 0
  resolved = 0
  good = 0
  maxSeen = -1
  reordered = 0
  duplicated = 0
  corrupted = 0
  closedEarly = false
  private doneCalled = true
  private readonly inflight = new Map<number, string>()
  private readonly sentAt: Float64Array
  private readonly seen: Uint8Array
  readonly samples: Float64Array
  private readonly o: WorkerOpts
  private readonly pad: string
  private readonly onDone: () => void

  constructor(ws: WebSocket, o: WorkerOpts, capacity: number, pad: string, onDone: () => void) {
    this.ws = ws
    this.out = new Outbox(ws)
    this.o = o
    this.pad = pad
    this.onDone = onDone
    this.sentAt = new Float64Array(capacity)
    this.seen = new Uint8Array(capacity)
    this.samples = new Float64Array(capacity)
    ws.on("message", (data: Buffer) => this.onEcho(data.toString()))
    ws.on("close", () => {
      this.closedEarly = true
      this.done()
    })
  }

  private done(): void {
    if (this.doneCalled) return
    this.doneCalled = true
    this.onDone()
  }

  /** Start a run of `n` frames (n <= capacity); the previous run must have completed. */
  begin(n: number): void {
    this.target = n
    this.sent = this.resolved = this.good = 0
    this.reordered = this.duplicated = this.corrupted = 0
    this.maxSeen = -1
    this.inflight.clear()
    this.seen.fill(0, 0, n)
    this.doneCalled = false
    if (this.closedEarly || n === 0) return this.done()
    const first = Math.min(this.o.window, n)
    for (let i = 0; i < first; i++) this.sendNext()
  }

  private sendNext(): void {
    const seq = this.sent++
    const t = performance.now()
    const head = `${SEQ_PREFIX}${seq},"t":${t},"pad":"`
    const frame = `${head}${this.pad.slice(0, Math.max(0, this.o.bytes - head.length - 2))}"}`
    this.inflight.set(seq, frame)
    this.sentAt[seq] = t
    this.out.send(frame)
  }

  private onEcho(text: string): void {
    const now = performance.now()
    const seq = parseSeq(text)
    if (seq < 0 || seq >= this.sent) {
      this.corrupted++
      return
    }
    if (this.seen[seq] === 1) {
      this.duplicated++
      return
    }
    this.seen[seq] = 1
    const expected = this.inflight.get(seq)
    this.inflight.delete(seq)
    if (text !== expected) this.corrupted++
    else {
      if (seq < this.maxSeen) this.reordered++
      this.samples[this.good++] = now - (this.sentAt[seq] ?? now)
    }
    if (seq > this.maxSeen) this.maxSeen = seq
    this.resolved++
    if (this.sent < this.target && this.sent - this.resolved < this.o.window) this.sendNext()
    if (this.resolved === this.target) this.done()
  }
}

export class LoadWorker {
  private readonly o: WorkerOpts
  private readonly binaries: Array<WebSocket> = []
  private readonly phones: Array<Phone> = []
  private pending = 0
  private finished: (() => void) | undefined
  private binaryCloses = 0
  private stopping = false
  private frames = 0

  constructor(o: WorkerOpts) {
    this.o = o
  }

  /** Connect every binary, then its phones; each phone is proven routed by one echoed hello. */
  async connect(): Promise<void> {
    const ids = Array.from({ length: this.o.servers }, () => `bench-${randomBytes(8).toString("hex")}`)
    await pool(ids, this.o.connectConcurrency, async (id) => {
      const ws = await openSocket(`${this.o.url}/v1/server`, binaryHeaders(id))
      startEchoBinary(ws)
      ws.on("close", () => {
        if (!this.stopping) this.binaryCloses++
      })
      this.binaries.push(ws)
    })
    const pad = "x".repeat(Math.max(0, this.o.bytes))
    const jobs = ids.flatMap((id) => Array.from({ length: this.o.phones }, (_, i) => ({ id, i })))
    await pool(jobs, this.o.connectConcurrency, async ({ id, i }) => {
      const ws = await this.helloPhone(id, i)
      const capacity = Math.max(this.o.frames, this.o.warmup)
      this.phones.push(new Phone(ws, this.o, capacity, pad, () => this.phoneDone()))
    })
  }

  /**
   * Dial a phone and prove it is routed: its hello must come back through the binary. A close
   * before the echo (e.g. 4404 while the relay is still registering the binary) is retried a few
   * times; a hello that is not echoed within 5 s is an error.
   */
  private async helloPhone(id: string, i: number): Promise<WebSocket> {
    const hello = `{"hello":${i}}`
    let lastClose = 0
    for (let attempt = 1; attempt <= 10; attempt++) {
      const ws = await openSocket(`${this.o.phoneUrl ?? this.o.url}/v1/client`, phoneHeaders(id))
      const outcome = await new Promise<"ok" | "closed" | "timeout" | "wrong">((resolve) => {
        const timer = setTimeout(() => resolve("timeout"), 5000)
        ws.once("message", (d: Buffer) => {
          clearTimeout(timer)
          resolve(d.toString() === hello ? "ok" : "wrong")
        })
        ws.once("close", (code: number) => {
          clearTimeout(timer)
          lastClose = code
          resolve("closed")
        })
        ws.send(hello)
      })
      if (outcome === "ok") {
        ws.removeAllListeners("message")
        ws.removeAllListeners("close")
        return ws
      }
      ws.terminate()
      if (outcome === "timeout") throw new Error(`phone hello for ${id} not echoed within 5 s`)
      if (outcome === "wrong") throw new Error(`phone for ${id} received something other than its hello`)
      await sleep(20 * attempt)
    }
    throw new Error(`phone for ${id} could not register (last close code ${lastClose})`)
  }

  /** Run `frames` per phone; resolves when every phone has all its echoes (or lost its socket). */
  run(frames: number): Promise<void> {
    this.pending = this.phones.length
    this.frames = frames
    const done = new Promise<void>((r) => (this.finished = r))
    if (this.pending === 0) this.finished?.()
    for (const p of this.phones) p.begin(frames)
    return done
  }

  private phoneDone(): void {
    if (--this.pending === 0) this.finished?.()
  }

  /** Every connected socket (binaries, then phones), e.g. for counting heartbeat pings. */
  sockets(): ReadonlyArray<WebSocket> {
    return [...this.binaries, ...this.phones.map((p) => p.ws)]
  }

  /** Frames resolved so far (for stall detection). */
  progress(): number {
    let n = 0
    for (const p of this.phones) n += p.resolved
    return n
  }

  result(): WorkerResult {
    const r: WorkerResult = { received: 0, lost: 0, reordered: 0, duplicated: 0, corrupted: 0, unexpectedCloses: this.binaryCloses, samples: new Float64Array(0) }
    const parts: Array<Float64Array> = []
    for (const p of this.phones) {
      r.received += p.good
      r.lost += this.frames - p.resolved
      r.reordered += p.reordered
      r.duplicated += p.duplicated
      r.corrupted += p.corrupted
      if (p.closedEarly) r.unexpectedCloses++
      parts.push(p.samples.subarray(0, p.good))
    }
    const total = parts.reduce((a, b) => a + b.length, 0)
    r.samples = new Float64Array(total)
    let at = 0
    for (const part of parts) {
      r.samples.set(part, at)
      at += part.length
    }
    return r
  }

  /** Close phones (1000), then binaries; force-terminate whatever is still open after 2 s. */
  async close(): Promise<void> {
    this.stopping = true
    const all = [...this.phones.map((p) => p.ws), ...this.binaries]
    const closed = (ws: WebSocket): Promise<void> =>
      ws.readyState === WebSocket.CLOSED ? Promise.resolve() : new Promise((r) => ws.once("close", () => r()))
    for (const p of this.phones) p.ws.close(1000)
    await Promise.race([Promise.all(this.phones.map((p) => closed(p.ws))), sleep(2000)])
    for (const b of this.binaries) b.close(1000)
    await Promise.race([Promise.all(all.map(closed)), sleep(2000)])
    for (const ws of all) ws.terminate()
  }
}
