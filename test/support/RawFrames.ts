/**
 * Hand-built WebSocket frames and a raw TCP peer for hostile-input tests (RFC 6455 §5).
 *
 * `buildFrame` can produce anything a well-behaved library refuses to: unmasked client frames,
 * RSV bits, reserved opcodes, oversized or fragmented control frames, lying length fields.
 * `rawDial` completes the upgrade by hand and then records every frame the relay sends, whether
 * the relay half-closed (FIN) and when the TCP connection is fully gone.
 */
import * as Net from "node:net"

export const OP = {
  continuation: 0x0,
  text: 0x1,
  binary: 0x2,
  close: 0x8,
  ping: 0x9,
  pong: 0xa
} as const

export interface FrameSpec {
  readonly opcode: number
  readonly payload?: Buffer | string
  /** FIN bit; default true. */
  readonly fin?: boolean
  readonly rsv1?: boolean
  readonly rsv2?: boolean
  readonly rsv3?: boolean
  /** Masking key; `false` sends the frame unmasked (illegal from a client). Default: a fixed key. */
  readonly mask?: Buffer | false
}

const DEFAULT_MASK = Buffer.from([0x37, 0xfa, 0x21, 0x3d])

/** One client frame, exactly as specified (no validation: that is the point). */
export const buildFrame = (spec: FrameSpec): Buffer => {
  const payload = typeof spec.payload === "string" ? Buffer.from(spec.payload, "utf8") : spec.payload ?? Buffer.alloc(0)
  const mask = spec.mask === false ? undefined : spec.mask ?? DEFAULT_MASK
  const b0 = ((spec.fin ?? true) ? 0x80 : 0) | (spec.rsv1 ? 0x40 : 0) | (spec.rsv2 ? 0x20 : 0) | (spec.rsv3 ? 0x10 : 0) |
    (spec.opcode & 0x0f)
  const maskBit = mask ? 0x80 : 0
  const len = payload.length
  let header: Buffer
  if (len < 126) header = Buffer.from([b0, maskBit | len])
  else if (len < 65536) {
    header = Buffer.alloc(4)
    header[0] = b0
    header[1] = maskBit | 126
    header.writeUInt16BE(len, 2)
  } else {
    header = Buffer.alloc(10)
    header[0] = b0
    header[1] = maskBit | 127
    header.writeBigUInt64BE(BigInt(len), 2)
  }
  if (!mask) return Buffer.concat([header, payload])
  const masked = Buffer.allocUnsafe(len)
  for (let i = 0; i < len; i++) masked[i] = payload[i]! ^ mask[i % 4]!
  return Buffer.concat([header, mask, masked])
}

/** A close frame payload: 2-byte code plus reason bytes. */
export const closePayload = (code: number, reason: Buffer | string = ""): Buffer => {
  const head = Buffer.alloc(2)
  head.writeUInt16BE(code, 0)
  return Buffer.concat([head, typeof reason === "string" ? Buffer.from(reason) : reason])
}

export interface ServerFrame {
  readonly fin: boolean
  readonly rsv: number
  readonly opcode: number
  readonly masked: boolean
  readonly payload: Buffer
}

/** Parses complete server frames off the front of `buf`; returns them and the unparsed rest. */
export const parseFrames = (buf: Buffer): { frames: Array<ServerFrame>; rest: Buffer } => {
  const frames: Array<ServerFrame> = []
  let offset = 0
  for (;;) {
    if (buf.length - offset < 2) break
    const b0 = buf[offset]!
    const b1 = buf[offset + 1]!
    let len = b1 & 0x7f
    let pos = offset + 2
    if (len === 126) {
      if (buf.length - pos < 2) break
      len = buf.readUInt16BE(pos)
      pos += 2
    } else if (len === 127) {
      if (buf.length - pos < 8) break
      len = Number(buf.readBigUInt64BE(pos))
      pos += 8
    }
    const masked = (b1 & 0x80) !== 0
    let mask: Buffer | undefined
    if (masked) {
      if (buf.length - pos < 4) break
      mask = buf.subarray(pos, pos + 4)
      pos += 4
    }
    if (buf.length - pos < len) break
    const payload = Buffer.from(buf.subarray(pos, pos + len))
    if (mask) for (let i = 0; i < len; i++) payload[i] = payload[i]! ^ mask[i % 4]!
    frames.push({ fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 0x7, opcode: b0 & 0x0f, masked, payload })
    offset = pos + len
  }
  return { frames, rest: buf.subarray(offset) }
}

export interface CloseFrameInfo {
  /** The code in the close frame; 1005 when the frame had no payload. */
  readonly code: number
  readonly reason: string
  /** Raw payload length (a well-formed close frame has 0 or ≥ 2). */
  readonly length: number
}

export const decodeClose = (frame: ServerFrame): CloseFrameInfo => ({
  code: frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : 1005,
  reason: frame.payload.length > 2 ? frame.payload.subarray(2).toString("utf8") : "",
  length: frame.payload.length
})

export interface RawPeer {
  readonly socket: Net.Socket
  /** Every frame the relay sent, in order. */
  readonly frames: Array<ServerFrame>
  /** Bytes after the last complete frame (a truncated frame when the relay hung up mid-frame). */
  readonly trailing: () => Buffer
  /** Resolves when the relay half-closed (FIN received); never after a reset. */
  readonly ended: Promise<void>
  /** Resolves when the TCP connection is fully closed (either side). */
  readonly closed: Promise<void>
  readonly isClosed: () => boolean
  /** Waits until `predicate` holds over the frames received so far, or the socket is closed. */
  readonly waitFrame: (predicate: (f: ServerFrame) => boolean, timeoutMs?: number) => Promise<ServerFrame | undefined>
  /** Writes bytes; errors (EPIPE/ECONNRESET after the relay hung up) are swallowed. Resolves when flushed or failed. */
  readonly write: (bytes: Buffer) => Promise<void>
}

export interface RawDialResult {
  readonly status: number
  readonly head: string
  readonly peer: RawPeer | undefined
}

const requestHead = (path: string, headers: Record<string, string>, key: string): string =>
  [
    `GET ${path} HTTP/1.1`,
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${key}`,
    "Sec-WebSocket-Version: 13",
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)
  ].join("\r\n") + "\r\n\r\n"

/**
 * Opens a TCP connection to 127.0.0.1:`port`, sends a hand-made upgrade request and, on 101,
 * returns a `RawPeer` that records everything the relay sends afterwards. On any other status
 * the socket is destroyed and `peer` is undefined.
 */
export const rawDial = (
  port: number,
  path: string,
  headers: Record<string, string>,
  options: { readonly timeoutMs?: number } = {}
): Promise<RawDialResult> =>
  new Promise((resolve, reject) => {
    const socket = Net.connect(port, "127.0.0.1")
    socket.setNoDelay(true)
    const key = Buffer.from(Array.from({ length: 16 }, (_, i) => (i * 37 + 11) & 0xff)).toString("base64")
    const frames: Array<ServerFrame> = []
    let buf: Buffer = Buffer.alloc(0)
    let upgraded = false
    let closedFlag = false
    const waiters = new Set<() => void>()
    const notify = () => {
      for (const w of [...waiters]) w()
    }
    let onEnded!: () => void
    let onClosed!: () => void
    const ended = new Promise<void>((r) => (onEnded = r))
    const closed = new Promise<void>((r) => (onClosed = r))
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no upgrade response within ${options.timeoutMs ?? 10_000} ms`))
    }, options.timeoutMs ?? 10_000)

    socket.on("error", () => {})
    socket.on("end", () => {
      onEnded()
      // Finish our half too: the relay said it is done.
      socket.end()
      notify()
    })
    socket.on("close", () => {
      closedFlag = true
      clearTimeout(timer)
      onClosed()
      notify()
      if (!upgraded) {
        const head = buf.toString("latin1")
        const status = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]
        resolve({ status: status ? Number(status) : 0, head, peer: undefined })
      }
    })
    socket.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n")
        if (end === -1) return
        const head = buf.subarray(0, end).toString("latin1")
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0)
        if (status !== 101) {
          clearTimeout(timer)
          upgraded = false
          socket.destroy()
          resolve({ status, head, peer: undefined })
          return
        }
        upgraded = true
        clearTimeout(timer)
        buf = buf.subarray(end + 4)
        resolve({ status, head, peer })
      }
      const parsed = parseFrames(buf)
      buf = parsed.rest
      if (parsed.frames.length > 0) {
        frames.push(...parsed.frames)
        notify()
      }
    })
    socket.once("connect", () => socket.write(requestHead(path, headers, key)))

    const waitFrame = (predicate: (f: ServerFrame) => boolean, timeoutMs = 10_000) =>
      new Promise<ServerFrame | undefined>((res) => {
        const check = () => {
          const found = frames.find(predicate)
          if (found !== undefined || closedFlag) {
            waiters.delete(check)
            clearTimeout(t)
            res(found)
          }
        }
        const t = setTimeout(() => {
          waiters.delete(check)
          res(frames.find(predicate))
        }, timeoutMs)
        waiters.add(check)
        check()
      })

    const write = (bytes: Buffer) =>
      new Promise<void>((res) => {
        if (socket.destroyed || !socket.writable) return res()
        socket.write(bytes, () => res())
      })

    const peer: RawPeer = {
      socket,
      frames,
      trailing: () => buf,
      ended,
      closed,
      isClosed: () => closedFlag,
      waitFrame,
      write
    }
  })

export interface CloseOutcome {
  /** The relay's close frame, if it sent one before hanging up. */
  readonly closeFrame: CloseFrameInfo | undefined
  /** Frames other than close that arrived (pongs, text). */
  readonly otherFrames: Array<ServerFrame>
  /** The TCP connection is gone. */
  readonly tcpClosed: boolean
  /** The relay half-closed with FIN (as opposed to us timing out and destroying). */
  readonly relayEnded: boolean
  readonly elapsedMs: number
}

/**
 * Waits for the relay to close the connection (close frame and/or TCP close) for at most
 * `timeoutMs`, then destroys the socket if it is still there. Answers a close frame with a
 * masked close frame echoing its code, as a client should. `otherFrames` counts from frame
 * number `sinceFrame` (skip what arrived before the hostile bytes).
 */
export const closeOutcome = async (peer: RawPeer, timeoutMs = 15_000, sinceFrame = 0): Promise<CloseOutcome> => {
  const started = Date.now()
  let relayEnded = false
  void peer.ended.then(() => (relayEnded = true))
  const closeFrame = await peer.waitFrame((f) => f.opcode === OP.close, timeoutMs)
  if (closeFrame !== undefined && !peer.isClosed()) {
    const info = decodeClose(closeFrame)
    await peer.write(buildFrame({ opcode: OP.close, payload: info.length >= 2 ? closePayload(info.code) : Buffer.alloc(0) }))
  }
  const remaining = Math.max(0, timeoutMs - (Date.now() - started))
  const tcpClosed = await Promise.race([
    peer.closed.then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), remaining))
  ])
  if (!tcpClosed) peer.socket.destroy()
  return {
    closeFrame: closeFrame === undefined ? undefined : decodeClose(closeFrame),
    otherFrames: peer.frames.slice(sinceFrame).filter((f) => f.opcode !== OP.close),
    tcpClosed,
    relayEnded,
    elapsedMs: Date.now() - started
  }
}

/**
 * Sends raw bytes as an HTTP request and collects the response head (if any) until the relay
 * closes the connection or `timeoutMs` passes.
 */
export const rawHttp = (
  port: number,
  request: Buffer | string,
  timeoutMs = 10_000
): Promise<{ status: number | undefined; head: string; closedByRelay: boolean }> =>
  new Promise((resolve) => {
    const socket = Net.connect(port, "127.0.0.1")
    let buf: Buffer = Buffer.alloc(0)
    let done = false
    const finish = (closedByRelay: boolean) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      const head = buf.toString("latin1")
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1]
      resolve({ status: status === undefined ? undefined : Number(status), head, closedByRelay })
    }
    const timer = setTimeout(() => finish(false), timeoutMs)
    socket.on("error", () => {})
    socket.on("data", (d: Buffer) => (buf = Buffer.concat([buf, d])))
    socket.on("end", () => finish(true))
    socket.on("close", () => finish(true))
    socket.once("connect", () => socket.write(request))
  })

/** Resident set size of a process in bytes, from `/proc/<pid>/status` (Linux). */
export const rssBytes = async (pid: number): Promise<number> => {
  const { readFile } = await import("node:fs/promises")
  const status = await readFile(`/proc/${pid}/status`, "utf8")
  const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1]
  if (kb === undefined) throw new Error("no VmRSS")
  return Number(kb) * 1024
}

/** A small deterministic PRNG (xorshift32) for reproducible random bytes. */
export const prng = (seed: number) => {
  let x = seed >>> 0 || 0x9e3779b9
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x
  }
}

export const randomBytes = (seed: number, length: number): Buffer => {
  const next = prng(seed)
  const out = Buffer.alloc(length)
  for (let i = 0; i < length; i++) out[i] = next() & 0xff
  return out
}

/**
 * `startRelay` gives the process 5 s to log "relay started"; on a loaded 2-core machine a cold
 * start can take longer. Retries a few times (each attempt is a fresh process on fresh ports).
 */
export const startRelayPatiently = async <R>(
  start: (flags: ReadonlyArray<string>) => Promise<R>,
  flags: ReadonlyArray<string>,
  attempts = 3
): Promise<R> => {
  let last: unknown
  for (let i = 0; i < attempts; i++) {
    try {
      return await start(flags)
    } catch (error) {
      last = error
    }
  }
  throw last
}
