/**
 * Reading the cross-node wire (`Wire.ts`): a batch's records, in order; a reader stops at the
 * first record it cannot read whole and skips types it does not know. Pure.
 */
import { HOW, type Message, TYPE, WHY } from "./Wire.ts"

/** How many recent strings of a batch a reader remembers (a slot's ids head each of its records). */
const RECENT = 8

/**
 * Reads the records of one batch; any read past the current record's end throws `Truncated`.
 * A string whose bytes match one of the last few read from the batch is that string again (a
 * byte compare, not a decode: a batch repeats a few ids in every record).
 */
class Reader {
  private at = 0
  private end = 0
  private readonly buf: Buffer
  private readonly recentAt = new Int32Array(RECENT).fill(-1)
  private readonly recentLength = new Int32Array(RECENT)
  private readonly recent: Array<string> = new Array<string>(RECENT).fill("")
  private next = 0
  constructor(buf: Buffer) {
    this.buf = buf
  }
  /** The next record's body is `buf[at, end)`. */
  record(at: number, end: number): void {
    this.at = at
    this.end = end
  }
  u8(): number {
    this.need(1)
    return this.buf[this.at++]!
  }
  u32(): number {
    this.need(4)
    const n = this.buf.readUInt32BE(this.at)
    this.at += 4
    return n
  }
  str(): string {
    this.need(2)
    const len = this.buf.readUInt16BE(this.at)
    this.at += 2
    this.need(len)
    const start = this.at
    this.at += len
    for (let i = 0; i < RECENT; i++) {
      if (this.recentLength[i] === len && this.recentAt[i]! >= 0 && this.same(this.recentAt[i]!, start, len)) return this.recent[i]!
    }
    const s = this.buf.toString("utf8", start, start + len)
    const slot = this.next
    this.next = (slot + 1) % RECENT
    this.recentAt[slot] = start
    this.recentLength[slot] = len
    this.recent[slot] = s
    return s
  }
  /** A view into the batch (no copy): valid as long as the batch is. */
  bytes(): Buffer {
    const len = this.u32()
    this.need(len)
    const b = this.buf.subarray(this.at, this.at + len)
    this.at += len
    return b
  }
  /** An index into `values`; out of range is malformed (like a field past the end). */
  pick<A>(values: ReadonlyArray<A>): A {
    const value = values[this.u8()]
    if (value === undefined) throw new Truncated()
    return value
  }
  private same(a: number, b: number, len: number): boolean {
    const buf = this.buf
    for (let i = 0; i < len; i++) if (buf[a + i] !== buf[b + i]) return false
    return true
  }
  private need(n: number): void {
    if (this.at + n > this.end) throw new Truncated()
  }
}

class Truncated extends Error {}

const read = (r: Reader): Message | undefined => {
  switch (r.u8()) {
    case TYPE.Probe:
      return { _tag: "Probe", id: r.u32(), serverId: r.str(), epoch: r.str(), replyTo: r.str() }
    case TYPE.ProbeAnswer:
      return { _tag: "ProbeAnswer", id: r.u32(), alive: r.u8() === 1 }
    case TYPE.ClaimLost:
      return { _tag: "ClaimLost", serverId: r.str(), epoch: r.str() }
    case TYPE.PhoneJoined:
      return { _tag: "PhoneJoined", serverId: r.str(), epoch: r.str(), connId: r.str(), node: r.str() }
    case TYPE.PhoneLeft:
      return { _tag: "PhoneLeft", serverId: r.str(), epoch: r.str(), connId: r.str(), notice: r.u32() }
    case TYPE.ToBinary: {
      const serverId = r.str()
      const epoch = r.str()
      const connId = r.str()
      const node = r.str()
      const count = r.u32()
      const envelopes: Array<Buffer> = []
      for (let i = 0; i < count; i++) envelopes.push(r.bytes())
      return { _tag: "ToBinary", serverId, epoch, connId, node, envelopes }
    }
    case TYPE.ToPhone: {
      const serverId = r.str()
      const epoch = r.str()
      const connId = r.str()
      const closeCode = r.u32()
      const frame = r.u8() === 1 ? r.bytes() : undefined
      return { _tag: "ToPhone", serverId, epoch, connId, frame, closeCode }
    }
    case TYPE.PhoneRefused:
      return { _tag: "PhoneRefused", serverId: r.str(), epoch: r.str(), connId: r.str(), why: r.pick(WHY) }
    case TYPE.SlotGrace:
      return { _tag: "SlotGrace", serverId: r.str(), epoch: r.str() }
    case TYPE.SlotEnded:
      return { _tag: "SlotEnded", serverId: r.str(), epoch: r.str(), how: r.pick(HOW) }
    default:
      return undefined
  }
}

/** A batch's messages in order; `dropped`: records not read (truncated from there, or malformed). */
export const decode = (batch: Buffer): { readonly messages: Array<Message>; readonly dropped: number; readonly unknown: number } => {
  const messages: Array<Message> = []
  const reader = new Reader(batch)
  let unknown = 0
  let at = 0
  while (at < batch.length) {
    if (at + 4 > batch.length) return { messages, dropped: 1, unknown }
    const length = batch.readUInt32BE(at)
    if (length === 0 || at + 4 + length > batch.length) return { messages, dropped: 1, unknown }
    reader.record(at + 4, at + 4 + length)
    at += 4 + length
    try {
      const message = read(reader)
      if (message === undefined) unknown++
      else messages.push(message)
    } catch (e) {
      if (!(e instanceof Truncated)) throw e
      return { messages, dropped: 1, unknown }
    }
  }
  return { messages, dropped: 0, unknown }
}
