/** What the registry holds for each connection. Identity (===) is what every check compares. */
import type { Frame, PeerConnection } from "../connection/PeerConnection.ts"
import type { Outbox } from "../outbox/Outbox.ts"

export interface BinaryHandle {
  /** `server-<server-id>-<8 hex>`, for logs only. */
  readonly connId: string
  readonly serverId: string
  readonly version: string
  readonly conn: PeerConnection
  /**
   * Cluster mode: set when the binary is on another node and this handle stands for it. Its
   * `conn.send` relays frames to that node, which counts them once written (CLUSTER.md §4).
   */
  readonly remote?: RemoteBinary
}

/** A binary on another node, as a phone's node reaches it. */
export interface RemoteBinary {
  /** Queues phone `connId`'s envelopes for the binary's node, in order; `false` when they did not fit. */
  readonly relay: (connId: string, envelopes: ReadonlyArray<Frame>) => boolean
  /** The phone left on its own: the binary's node sends it this close notice (SPEC §2.4), in order after its frames. */
  readonly closeNotice: (connId: string, code: number) => void
}

export interface PhoneHandle {
  /** `client-<server-id>-<8 hex>`: the routing key inside the slot. */
  readonly connId: string
  readonly serverId: string
  readonly deviceName: string | undefined
  /** The binary connection that held the slot when this phone registered (close-notice identity, §2.4). */
  readonly servedBy: BinaryHandle
  readonly conn: PeerConnection
  readonly outbox: Outbox
  /** `{"conn_id":"…","frame":` for this phone as UTF-8, computed once. */
  readonly envelopePrefix: Buffer
  /** Set as soon as a close directive for this phone is accepted; suppresses the close notice. */
  closedByBinary: boolean
}
