/**
 * Server-to-client WebSocket text frames (RFC 6455 §5.2: FIN, opcode 1, unmasked), built for a
 * whole batch into one buffer. `ws` would build and write a header and a payload per message (two
 * stream writes each); the relay writes one buffer per batch instead, on the same socket, in the
 * same synchronous order as `ws`'s own writes (pings, close frames) — `ws` queues nothing of its
 * own without permessage-deflate, which the relay turns off.
 */
import type { Frame } from "../connection/PeerConnection.ts"

/** UTF-8 bytes of a frame's payload. */
export const payloadBytes = (frame: Frame): number => {
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
 * The frames as one buffer of consecutive text frames, and their total payload bytes. Every byte
 * is copied: the caller's buffers may be reused once this returns.
 */
export const encodeTextFrames = (frames: ReadonlyArray<Frame>): { readonly wire: Buffer; readonly payload: number } => {
  let payload = 0
  let size = 0
  const sizes = new Array<number>(frames.length)
  for (let i = 0; i < frames.length; i++) {
    const n = payloadBytes(frames[i]!)
    sizes[i] = n
    payload += n
    size += n + headerBytes(n)
  }
  const wire = Buffer.allocUnsafe(size)
  let at = 0
  for (let i = 0; i < frames.length; i++) {
    const frame = frames[i]!
    at = writeHeader(wire, at, sizes[i]!)
    if (typeof frame === "string") at += wire.write(frame, at)
    else if (Buffer.isBuffer(frame)) {
      wire.set(frame, at)
      at += frame.length
    } else {
      for (let k = 0; k < frame.length; k++) {
        wire.set(frame[k]!, at)
        at += frame[k]!.length
      }
    }
  }
  return { wire, payload }
}
