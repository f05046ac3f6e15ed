/**
 * The cross-node wire (CLUSTER.md §3): what one node publishes to another's inbox is one batch of
 * length-prefixed binary records — never JSON in JSON. A record is
 *
 *     u32 length of what follows (big-endian) · u8 type · fields
 *
 * and each field is a u16-length-prefixed UTF-8 string, a u8, a u32, or bytes (u32 length, then
 * the bytes as they are: frames and envelopes cross byte-exactly). A reader stops at the first
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
  | Relayed

/**
 * The data plane (CLUSTER.md §2.2–2.5): what passes between a phone's node and its binary's node.
 * Each names the claim (`epoch`) it belongs to; a receiver whose claim is another drops it
 * (`stale_epoch`), so no frame crosses from one claim to another (§2.7). Per destination they
 * travel in one ordered stream, so a phone's joining, frames and leaving keep their order.
 */
export type Relayed =
  /** Phone node → binary node: phone `connId` of claim `epoch` is on node `node`. */
  | { readonly _tag: "PhoneJoined"; readonly serverId: string; readonly epoch: string; readonly connId: string; readonly node: string }
  /** Phone node → binary node: the phone left; `notice` is the close notice's code (SPEC §2.4), 0 for none. */
  | { readonly _tag: "PhoneLeft"; readonly serverId: string; readonly epoch: string; readonly connId: string; readonly notice: number }
  /**
   * Phone node → binary node: the phone's frames, each already its envelope (SPEC §2.1,
   * byte-exact); `node` is the phone's (its join may still be on its way, or lost).
   */
  | {
    readonly _tag: "ToBinary"
    readonly serverId: string
    readonly epoch: string
    readonly connId: string
    readonly node: string
    readonly envelopes: ReadonlyArray<Buffer>
  }
  /** Binary node → phone node: a frame (raw JSON bytes) and/or a close directive (`closeCode` ≠ 0, SPEC §2.3). */
  | {
    readonly _tag: "ToPhone"
    readonly serverId: string
    readonly epoch: string
    readonly connId: string
    readonly frame: Buffer | undefined
    readonly closeCode: number
  }
  /**
   * Binary node → phone node: the phone is closed — its frames cannot be taken (`backlog_full` →
   * 1011 `binary backlog full`; `no_binary`, the binary is gone → 1000), or frames for it could not
   * be queued to it (`phone_backlog` → 1011 `phone backlog full`).
   */
  | { readonly _tag: "PhoneRefused"; readonly serverId: string; readonly epoch: string; readonly connId: string; readonly why: RefusedWhy }
  /** Binary node → phone nodes: the claim's binary left; the slot is in grace. */
  | { readonly _tag: "SlotGrace"; readonly serverId: string; readonly epoch: string }
  /** Whoever ended claim `epoch` → its phones' nodes: `reclaimed` (reclaim, takeover: 4404) or `expired` (1000). */
  | { readonly _tag: "SlotEnded"; readonly serverId: string; readonly epoch: string; readonly how: EndedHow }

export type RefusedWhy = "backlog_full" | "no_binary" | "phone_backlog"
export type EndedHow = "reclaimed" | "expired"

const TYPE = {
  Probe: 1,
  ProbeAnswer: 2,
  ClaimLost: 3,
  PhoneJoined: 4,
  PhoneLeft: 5,
  ToBinary: 6,
  ToPhone: 7,
  PhoneRefused: 8,
  SlotGrace: 9,
  SlotEnded: 10
} as const satisfies Record<Message["_tag"], number>

const WHY: ReadonlyArray<RefusedWhy> = ["backlog_full", "no_binary", "phone_backlog"]
const HOW: ReadonlyArray<EndedHow> = ["reclaimed", "expired"]

/**
 * Collects a record's fields, then writes them into one buffer sized once (`finish`): one
 * allocation per record, and frames copied once, straight into it.
 */
class Writer {
  /** Field kinds: 0 u8, 1 u32, 2 string (its UTF-8 length in `lengths`), 3 bytes. */
  private readonly kinds: Array<number> = []
  private readonly values: Array<number | string | Buffer> = []
  private readonly lengths: Array<number> = []
  private size = 0
  u8(n: number): this {
    return this.add(0, n, 1)
  }
  u32(n: number): this {
    return this.add(1, n, 4)
  }
  str(s: string): this {
    const length = Buffer.byteLength(s, "utf8")
    if (length > 0xffff) throw new RangeError("string field over 65535 bytes")
    this.lengths.push(length)
    return this.add(2, s, 2 + length)
  }
  /** Bytes as they are. */
  bytes(b: Buffer): this {
    return this.add(3, b, 4 + b.length)
  }
  /** The record: u32 length of the body, then the body. */
  finish(): Buffer {
    const out = Buffer.allocUnsafe(4 + this.size)
    out.writeUInt32BE(this.size, 0)
    let at = 4
    let string = 0
    for (let i = 0; i < this.kinds.length; i++) {
      const value = this.values[i]!
      switch (this.kinds[i]) {
        case 0:
          out[at++] = value as number
          break
        case 1:
          out.writeUInt32BE((value as number) >>> 0, at)
          at += 4
          break
        case 2: {
          const length = this.lengths[string++]!
          out.writeUInt16BE(length, at)
          out.write(value as string, at + 2, length, "utf8")
          at += 2 + length
          break
        }
        default: {
          const bytes = value as Buffer
          out.writeUInt32BE(bytes.length, at)
          bytes.copy(out, at + 4)
          at += 4 + bytes.length
        }
      }
    }
    return out
  }
  private add(kind: number, value: number | string | Buffer, size: number): this {
    this.kinds.push(kind)
    this.values.push(value)
    this.size += size
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
    case "SlotGrace":
      body.str(message.serverId).str(message.epoch)
      break
    case "PhoneJoined":
      body.str(message.serverId).str(message.epoch).str(message.connId).str(message.node)
      break
    case "PhoneLeft":
      body.str(message.serverId).str(message.epoch).str(message.connId).u32(message.notice)
      break
    case "ToBinary":
      body.str(message.serverId).str(message.epoch).str(message.connId).str(message.node).u32(message.envelopes.length)
      for (const envelope of message.envelopes) body.bytes(envelope)
      break
    case "ToPhone":
      body.str(message.serverId).str(message.epoch).str(message.connId).u32(message.closeCode)
      if (message.frame === undefined) body.u8(0)
      else body.u8(1).bytes(message.frame)
      break
    case "PhoneRefused":
      body.str(message.serverId).str(message.epoch).str(message.connId).u8(WHY.indexOf(message.why))
      break
    case "SlotEnded":
      body.str(message.serverId).str(message.epoch).u8(HOW.indexOf(message.how))
      break
  }
  return body.finish()
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
