/**
 * Per-socket write batching for `ws`: messages queued during one event-loop turn are written in
 * one corked burst (one writev syscall) by a single scheduled flush.
 *
 * Modes: "immediate" flushes from setImmediate (batches across every I/O callback of the poll
 * phase), "microtask" flushes at the end of the current callback, "sync" writes at once (no
 * batching; for comparison).
 */
import type { Socket } from "node:net"
import { WebSocket } from "ws"

export type FlushMode = "immediate" | "microtask" | "sync"

export const parseFlushMode = (v: string | undefined, fallback: FlushMode): FlushMode => {
  if (v === undefined) return fallback
  if (v === "immediate" || v === "microtask" || v === "sync") return v
  throw new Error(`--flush must be immediate, microtask or sync (got ${v})`)
}

/** Close after everything queued before it has been written. */
interface CloseMark {
  readonly code: number
  readonly reason: string
}

type Item = string | Buffer | CloseMark

const TEXT = { binary: false } as const

let mode: FlushMode = "immediate"
let dirty: Array<Outbox> = []
let scheduled = false

export const setFlushMode = (m: FlushMode): void => {
  mode = m
}

const flushAll = (): void => {
  scheduled = false
  const list = dirty
  dirty = []
  for (let i = 0; i < list.length; i++) list[i]?.flush()
}

const schedule = (): void => {
  if (scheduled) return
  scheduled = true
  if (mode === "immediate") setImmediate(flushAll)
  else queueMicrotask(flushAll)
}

const rawSocket = (ws: WebSocket): Socket | undefined =>
  (ws as unknown as { _socket: Socket | null })._socket ?? undefined

const write = (ws: WebSocket, item: Item): void => {
  if (typeof item === "string") ws.send(item)
  else if (Buffer.isBuffer(item)) ws.send(item, TEXT)
  else ws.close(item.code, item.reason)
}

export class Outbox {
  readonly ws: WebSocket
  /** Bytes queued but not yet handed to the socket. */
  bytes = 0
  private items: Array<Item> = []
  private queued = false

  constructor(ws: WebSocket) {
    this.ws = ws
  }

  /** Queue one text message (string or UTF-8 bytes). */
  send(data: string | Buffer): void {
    if (mode === "sync") {
      if (this.ws.readyState === WebSocket.OPEN) write(this.ws, data)
      return
    }
    this.items.push(data)
    this.bytes += data.length
    this.mark()
  }

  /** Queue a close that happens after every message queued before it. */
  close(code: number, reason = ""): void {
    if (mode === "sync") {
      this.ws.close(code, reason)
      return
    }
    this.items.push({ code, reason })
    this.mark()
  }

  /** Write everything queued, corked into one burst. */
  flush(): void {
    this.queued = false
    const items = this.items
    if (items.length === 0) return
    this.items = []
    this.bytes = 0
    const ws = this.ws
    if (ws.readyState !== WebSocket.OPEN) return
    if (items.length === 1) {
      write(ws, items[0] as Item)
      return
    }
    const sock = rawSocket(ws)
    sock?.cork()
    for (let i = 0; i < items.length; i++) {
      write(ws, items[i] as Item)
      if (ws.readyState !== WebSocket.OPEN) break
    }
    sock?.uncork()
  }

  private mark(): void {
    if (this.queued) return
    this.queued = true
    dirty.push(this)
    schedule()
  }
}
