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
 * run side by side. Pure: no I/O. Writing is `WireWriter.ts`, reading `WireReader.ts`.
 */
import type { Frame } from "../connection/PeerConnection.ts"

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
  | ToBinary
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

export interface ToBinary<Envelope = Buffer> {
  readonly _tag: "ToBinary"
  readonly serverId: string
  readonly epoch: string
  readonly connId: string
  readonly node: string
  readonly envelopes: ReadonlyArray<Envelope>
}

/** What a node sends: a `Message`, but a phone's envelopes as the forwarder hands them (in parts). */
export type Outgoing = Exclude<Message, { readonly _tag: "ToBinary" }> | ToBinary<Frame>

export type RefusedWhy = "backlog_full" | "no_binary" | "phone_backlog"
export type EndedHow = "reclaimed" | "expired"

export const TYPE = {
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

export const WHY: ReadonlyArray<RefusedWhy> = ["backlog_full", "no_binary", "phone_backlog"]
export const HOW: ReadonlyArray<EndedHow> = ["reclaimed", "expired"]
