/**
 * Server-to-client WebSocket text frames (RFC 6455 §5.2: FIN, opcode 1, unmasked), built for a
 * whole batch at once. `ws` would build and write a header and a payload per message (two stream
 * writes each); the relay writes one buffer per batch instead (plus large payloads in place), on
 * the same socket, in the same synchronous order as `ws`'s own writes (pings, close frames) —
 * `ws` queues nothing of its own without permessage-deflate, which the relay turns off.
 */
import type { Frame } from "../connection/PeerConnection.ts"

/** UTF-8 bytes of a frame's payload. */
const payloadBytes = (frame: Frame): number => {
  if (typeof frame === "string") return Buffer.byteLength(frame)
  if (Buffer.isBuffer(frame)) return frame.length
  let n = 0
  for (let i = 0; i < frame.length; i++) n += frame[i]!.length
  return n
}

const headerBytes = (payload: number): number => (payload < 126 ? 2 : payload < 65536 ? 4 : 10)

const writeHeader = (out: Buffer, at: number, payload: number): number => {
  out[at] = 0x81 // FIN + text
  if (payload < 126) {
    out[at + 1] = payload
    return at + 2
  }
  if (payload < 65536) {
    out[at + 1] = 126
    out.writeUInt16BE(payload, at + 2)
    return at + 4
  }
  out[at + 1] = 127
  out.writeUInt32BE(Math.floor(payload / 0x1_0000_0000), at + 2)
  out.writeUInt32BE(payload >>> 0, at + 6)
  return at + 10
}

/**
 * Payloads at least this large are written where they are, not copied — if the buffer they sit
 * in is at most twice their size, so what the socket holds until it flushes is at most twice what
 * is counted. Copying 64 KiB frames into fresh batch buffers cost more in page faults than in
 * bytes moved.
 */
const IN_PLACE_MIN = 16 * 1024

const inPlace = (b: Buffer): boolean => b.length >= IN_PLACE_MIN && b.buffer.byteLength <= 2 * b.length

/** Bytes of `b` that are copied into the packed buffer. */
const copiedBytes = (b: Buffer): number => (inPlace(b) ? 0 : b.length)

/**
 * The frames as chunks to write in order: headers and small payloads packed into one buffer,
 * large payloads in place between them (see `IN_PLACE_MIN`); and their total payload bytes.
 * Whatever is packed is copied, so those buffers may be reused once this returns; a payload
 * written in place must stay unchanged until flushed (the relay never changes what it read).
 */
export const encodeTextFrames = (
  frames: ReadonlyArray<Frame>
): { readonly chunks: ReadonlyArray<Buffer>; readonly payload: number } => {
  let payload = 0
  let packed = 0
  const sizes = new Array<number>(frames.length)
  for (let i = 0; i < frames.length; i++) {
    const frame = frames[i]!
    const n = payloadBytes(frame)
    sizes[i] = n
    payload += n
    packed += headerBytes(n)
    if (typeof frame === "string") packed += n
    else if (Buffer.isBuffer(frame)) packed += copiedBytes(frame)
    else for (let k = 0; k < frame.length; k++) packed += copiedBytes(frame[k]!)
  }
  const pack = Buffer.allocUnsafe(packed)
  const chunks: Array<Buffer> = []
  let at = 0
  let chunkStart = 0
  const put = (part: Buffer): void => {
    if (!inPlace(part)) {
      pack.set(part, at)
      at += part.length
      return
    }
    if (at > chunkStart) chunks.push(pack.subarray(chunkStart, at))
    chunks.push(part)
    chunkStart = at
  }
  for (let i = 0; i < frames.length; i++) {
    const frame = frames[i]!
    at = writeHeader(pack, at, sizes[i]!)
    if (typeof frame === "string") at += pack.write(frame, at)
    else if (Buffer.isBuffer(frame)) put(frame)
    else for (let k = 0; k < frame.length; k++) put(frame[k]!)
  }
  if (at > chunkStart) chunks.push(pack.subarray(chunkStart, at))
  return { chunks, payload }
}
