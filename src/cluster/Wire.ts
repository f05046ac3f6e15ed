/**
 * The cross-node wire (CLUSTER.md §3): what one node publishes to another's inbox is one batch of
 * length-prefixed binary records — never JSON in JSON. A record is
 *
 *     u32 length of what follows (big-endian) · u8 type · fields
 *
 * and each field is a u16-length-prefixed UTF-8 string or a u32. A reader stops at the first
 * record it cannot read whole (a truncated or foreign batch is dropped from there, counted by the
 * caller) and skips record types it does not know (a newer node's), so nodes of two versions can
 * run side by side. Pure: no I/O.
 */

export type Message =
  /** Is the live binary of claim `epoch` on your node alive? Answer `id` to `replyTo`. */
  | { readonly _tag: "Probe"; readonly id: number; readonly serverId: string; readonly epoch: string; readonly replyTo: string }
  | { readonly _tag: "ProbeAnswer"; readonly id: number; readonly alive: boolean }
  /** Claim `epoch` of the slot was taken over by the sender: close its binary and phones here. */
  | { readonly _tag: "ClaimLost"; readonly serverId: string; readonly epoch: string }

const TYPE = { Probe: 1, ProbeAnswer: 2, ClaimLost: 3 } as const satisfies Record<Message["_tag"], number>

/** Appends fields to a growing list of buffers. */
class Writer {
  readonly parts: Array<Buffer> = []
  size = 0
  u8(n: number): this {
    return this.push(Buffer.of(n))
  }
  u32(n: number): this {
    const b = Buffer.allocUnsafe(4)
    b.writeUInt32BE(n >>> 0)
    return this.push(b)
  }
  str(s: string): this {
    const bytes = Buffer.from(s, "utf8")
    if (bytes.length > 0xffff) throw new RangeError("string field over 65535 bytes")
    const len = Buffer.allocUnsafe(2)
    len.writeUInt16BE(bytes.length)
    return this.push(len).push(bytes)
  }
  private push(b: Buffer): this {
    this.parts.push(b)
    this.size += b.length
    return this
  }
}

/** One record, length prefix included. */
export const encode = (message: Message): Buffer => {
  const body = new Writer().u8(TYPE[message._tag])
  switch (message._tag) {
    case "Probe":
      body.u32(message.id).str(message.serverId).str(message.epoch).str(message.replyTo)
      break
    case "ProbeAnswer":
      body.u32(message.id).u8(message.alive ? 1 : 0)
      break
    case "ClaimLost":
      body.str(message.serverId).str(message.epoch)
      break
  }
  const length = Buffer.allocUnsafe(4)
  length.writeUInt32BE(body.size)
  return Buffer.concat([length, ...body.parts], 4 + body.size)
}

/** Reads fields from one record's body; any read past its end throws `Truncated`. */
class Reader {
  private at = 0
  private readonly buf: Buffer
  constructor(buf: Buffer) {
    this.buf = buf
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
    const s = this.buf.toString("utf8", this.at, this.at + len)
    this.at += len
    return s
  }
  private need(n: number): void {
    if (this.at + n > this.buf.length) throw new Truncated()
  }
}

class Truncated extends Error {}

const read = (body: Buffer): Message | undefined => {
  const r = new Reader(body)
  switch (r.u8()) {
    case TYPE.Probe:
      return { _tag: "Probe", id: r.u32(), serverId: r.str(), epoch: r.str(), replyTo: r.str() }
    case TYPE.ProbeAnswer:
      return { _tag: "ProbeAnswer", id: r.u32(), alive: r.u8() === 1 }
    case TYPE.ClaimLost:
      return { _tag: "ClaimLost", serverId: r.str(), epoch: r.str() }
    default:
      return undefined
  }
}

/** A batch's messages in order; `dropped`: records not read (truncated from there, or malformed). */
export const decode = (batch: Buffer): { readonly messages: Array<Message>; readonly dropped: number; readonly unknown: number } => {
  const messages: Array<Message> = []
  let unknown = 0
  let at = 0
  while (at < batch.length) {
    if (at + 4 > batch.length) return { messages, dropped: 1, unknown }
    const length = batch.readUInt32BE(at)
    if (length === 0 || at + 4 + length > batch.length) return { messages, dropped: 1, unknown }
    const body = batch.subarray(at + 4, at + 4 + length)
    at += 4 + length
    try {
      const message = read(body)
      if (message === undefined) unknown++
      else messages.push(message)
    } catch (e) {
      if (!(e instanceof Truncated)) throw e
      return { messages, dropped: 1, unknown }
    }
  }
  return { messages, dropped: 0, unknown }
}
