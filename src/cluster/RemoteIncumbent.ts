/**
 * The incumbent of a conflict when it is on another node (CLUSTER.md §2.1): a `BinaryHandle`
 * whose connection is reached through that node. The conflict path treats it like a local
 * incumbent: its `ping` is the probe through the holder's node (answered `alive` in time → the
 * newcomer gets 4409; `dead`, no answer, or the node gone → takeover), and closing it tells that
 * node its claim was taken over (its binary 1011, its phones 4404). Nothing else of a connection
 * is ever used on an incumbent; those members are inert.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import { ConnectionLost } from "../domain/Errors.ts"
import type { BinaryHandle } from "../registry/Handles.ts"
import type { PlaneShape } from "./Plane.ts"

export interface RemoteClaim {
  readonly node: string
  readonly epoch: string
}

export const remoteIncumbent = (
  serverId: string,
  claim: RemoteClaim,
  plane: PlaneShape,
  probeTimeout: Duration.Duration
): BinaryHandle => {
  const conn: PeerConnection = {
    ping: Effect.flatMap(
      plane.probe(claim.node, serverId, claim.epoch, probeTimeout),
      (answer) => answer === "alive" ? Effect.void : Effect.fail(new ConnectionLost())
    ),
    close: () => Effect.sync(() => plane.tellLost(claim.node, serverId, claim.epoch)),
    isOpen: () => true,
    messages: Stream.empty,
    send: () => false,
    flushed: Effect.fail(new ConnectionLost()),
    pendingBytes: () => 0,
    lastProgressAt: () => 0,
    sendPing: () => false,
    pongs: () => 0,
    terminate: Effect.void,
    abort: () => {},
    closed: Effect.never,
    messageStartedAt: () => undefined
  }
  return { connId: `server-${serverId}@${claim.node}`, serverId, version: "", conn }
}
