/** What the registry holds for each connection. Identity (===) is what every check compares. */
import type { PeerConnection } from "../connection/PeerConnection.ts"
import type { Outbox } from "../outbox/Outbox.ts"

export interface BinaryHandle {
  /** `server-<server-id>-<8 hex>`, for logs only. */
  readonly connId: string
  readonly serverId: string
  readonly version: string
  readonly conn: PeerConnection
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
