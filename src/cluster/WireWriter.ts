/**
 * Writing the cross-node wire (`Wire.ts`): records one after another into one batch buffer. Pure.
 */
import type { Frame } from "../connection/PeerConnection.ts"
import { HOW, type Outgoing, TYPE, WHY } from "./Wire.ts"

/**
 * A string field as it goes on the wire (u16 length, then UTF-8), kept: the same few strings
 * (server-ids, epochs, conn_ids, node ids) head every record of a slot, so each is encoded once.
 * Bounded; emptied when full (a miss only costs the encoding).
 */
const encoded = new Map<string, Buffer>()
const ENCODED_MAX = 4096

const fieldOf = (s: string): Buffer => {
  let field = encoded.get(s)
  if (field !== undefined) return field
  const length = Buffer.byteLength(s, "utf8")
  if (length > 0xffff) throw new RangeError("string field over 65535 bytes")
  field = Buffer.allocUnsafe(2 + length)
  field.writeUInt16BE(length, 0)
  field.write(s, 2, length, "utf8")
  if (encoded.size >= ENCODED_MAX) encoded.clear()
  encoded.set(s, field)
  return field
}

/** Bytes of a frame as it is handed over: a string, one buffer, or parts of one message. */
const frameLength = (frame: Frame): number => {
  if (typeof frame === "string") return Buffer.byteLength(frame, "utf8")
  if (Buffer.isBuffer(frame)) return frame.length
  let length = 0
  for (const part of frame as ReadonlyArray<Buffer>) length += part.length
  return length
}

/**
 * Records written one after another into one growing buffer: what a node has for one other
 * node in one event-loop turn, published as one batch. Strings and frames are copied once,
 * straight into it; nothing is allocated per record.
 */
export class BatchWriter {
  private buf: Buffer
  private at = 0
  /** Records written. */
  records = 0
  /** Starts in `buffer` (one whose earlier batch is done with), or a new one of `buffer` bytes. */
  constructor(buffer: Buffer | number = 16 * 1024) {
    this.buf = typeof buffer === "number" ? Buffer.allocUnsafe(buffer) : buffer
  }
  /** The buffer written into, to be handed to the next batch once this one is sent. */
  get buffer(): Buffer {
    return this.buf
  }
  /** Bytes written so far. */
  get length(): number {
    return this.at
  }
  /** The batch: a view of what was written (the writer is not to be used after). */
  bytes(): Buffer {
    return this.buf.subarray(0, this.at)
  }
  /** Writes `message` as one record; returns its size (`recordSize`). */
  write(message: Outgoing): number {
    const size = recordSize(message)
    this.reserve(size)
    this.u32(size - 4)
    writeBody(this, message)
    this.records++
    return size
  }
  u8(n: number): void {
    this.buf[this.at++] = n
  }
  u32(n: number): void {
    this.buf.writeUInt32BE(n >>> 0, this.at)
    this.at += 4
  }
  str(s: string): void {
    this.copy(fieldOf(s))
  }
  /** Bytes as they are, after their u32 length. */
  bytes32(frame: Frame): void {
    if (typeof frame === "string") {
      const length = Buffer.byteLength(frame, "utf8")
      this.u32(length)
      this.at += this.buf.write(frame, this.at, length, "utf8")
    } else if (Buffer.isBuffer(frame)) {
      this.u32(frame.length)
      this.copy(frame)
    } else {
      this.u32(frameLength(frame))
      for (const part of frame as ReadonlyArray<Buffer>) this.copy(part)
    }
  }
  private copy(bytes: Uint8Array): void {
    const n = bytes.length
    if (n > 48) this.buf.set(bytes, this.at)
    else for (let i = 0; i < n; i++) this.buf[this.at + i] = bytes[i]!
    this.at += n
  }
  private reserve(n: number): void {
    if (this.at + n <= this.buf.length) return
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n))
    this.buf.copy(grown, 0, 0, this.at)
    this.buf = grown
  }
}

const strSize = (s: string): number => fieldOf(s).length
const bytesSize = (frame: Frame): number => 4 + frameLength(frame)

/** A record's size after its length prefix: the type byte and the fields. */
const bodySize = (message: Outgoing): number => {
  switch (message._tag) {
    case "Probe":
      return 1 + 4 + strSize(message.serverId) + strSize(message.epoch) + strSize(message.replyTo)
    case "ProbeAnswer":
      return 1 + 4 + 1
    case "ClaimLost":
    case "SlotGrace":
      return 1 + strSize(message.serverId) + strSize(message.epoch)
    case "PhoneJoined":
      return 1 + strSize(message.serverId) + strSize(message.epoch) + strSize(message.connId) + strSize(message.node)
    case "PhoneLeft":
      return 1 + strSize(message.serverId) + strSize(message.epoch) + strSize(message.connId) + 4
    case "ToBinary": {
      let size = 1 + strSize(message.serverId) + strSize(message.epoch) + strSize(message.connId) + strSize(message.node) + 4
      for (const envelope of message.envelopes) size += bytesSize(envelope)
      return size
    }
    case "ToPhone":
      return 1 + strSize(message.serverId) + strSize(message.epoch) + strSize(message.connId) + 4 + 1 +
        (message.frame === undefined ? 0 : bytesSize(message.frame))
    case "PhoneRefused":
      return 1 + strSize(message.serverId) + strSize(message.epoch) + strSize(message.connId) + 1
    case "SlotEnded":
      return 1 + strSize(message.serverId) + strSize(message.epoch) + 1
  }
}

/** The bytes `message` takes in a batch, length prefix included. */
export const recordSize = (message: Outgoing): number => 4 + bodySize(message)

const writeBody = (w: BatchWriter, message: Outgoing): void => {
  w.u8(TYPE[message._tag])
  switch (message._tag) {
    case "Probe":
      w.u32(message.id)
      w.str(message.serverId)
      w.str(message.epoch)
      w.str(message.replyTo)
      return
    case "ProbeAnswer":
      w.u32(message.id)
      w.u8(message.alive ? 1 : 0)
      return
    case "ClaimLost":
    case "SlotGrace":
      w.str(message.serverId)
      w.str(message.epoch)
      return
    case "PhoneJoined":
      w.str(message.serverId)
      w.str(message.epoch)
      w.str(message.connId)
      w.str(message.node)
      return
    case "PhoneLeft":
      w.str(message.serverId)
      w.str(message.epoch)
      w.str(message.connId)
      w.u32(message.notice)
      return
    case "ToBinary":
      w.str(message.serverId)
      w.str(message.epoch)
      w.str(message.connId)
      w.str(message.node)
      w.u32(message.envelopes.length)
      for (const envelope of message.envelopes) w.bytes32(envelope)
      return
    case "ToPhone":
      w.str(message.serverId)
      w.str(message.epoch)
      w.str(message.connId)
      w.u32(message.closeCode)
      if (message.frame === undefined) w.u8(0)
      else {
        w.u8(1)
        w.bytes32(message.frame)
      }
      return
    case "PhoneRefused":
      w.str(message.serverId)
      w.str(message.epoch)
      w.str(message.connId)
      w.u8(WHY.indexOf(message.why))
      return
    case "SlotEnded":
      w.str(message.serverId)
      w.str(message.epoch)
      w.u8(HOW.indexOf(message.how))
  }
}

/** One record, length prefix included. */
export const encode = (message: Outgoing): Buffer => {
  const w = new BatchWriter(64)
  w.write(message)
  return w.bytes()
}
