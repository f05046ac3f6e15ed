/**
 * In-process cross-node plane for unit tests: nodes made with `planeFor` reach each other's
 * handlers directly (the order of a real inbox is kept: one message at a time, in turn). A node
 * that was never made, or was `remove`d, is gone: its probes answer `gone`, like a `PUBLISH` that
 * reached nobody. Every record passes through the wire's bytes (`WireWriter`, `WireReader`).
 */
import * as Effect from "effect/Effect"
import type { PlaneHandlers, PlaneShape } from "../../src/cluster/Plane.ts"
import type * as Wire from "../../src/cluster/Wire.ts"
import { decode } from "../../src/cluster/WireReader.ts"
import { encode } from "../../src/cluster/WireWriter.ts"

export interface MemoryPlanes {
  readonly planeFor: (nodeId: string, handlers: () => PlaneHandlers | undefined) => PlaneShape
  /** The node dies: nothing reaches it any more. */
  readonly remove: (nodeId: string) => void
  /** `ClaimLost` messages sent, as `node:serverId:epoch`. */
  readonly lost: Array<string>
  /** Data-plane records sent, in order. */
  readonly relayed: Array<{ readonly node: string; readonly message: Wire.Message }>
  /** Delivers the `ClaimLost` messages and data-plane records sent so far, in order, in the caller's context. */
  readonly deliver: Effect.Effect<void>
}

export const makeMemoryPlanes = (): MemoryPlanes => {
  const nodes = new Map<string, () => PlaneHandlers | undefined>()
  const lost: Array<string> = []
  const relayed: Array<{ readonly node: string; readonly message: Wire.Message }> = []
  const queued: Array<Effect.Effect<void>> = []
  return {
    lost,
    relayed,
    deliver: Effect.suspend(() => Effect.forEach(queued.splice(0), (effect) => effect, { discard: true })),
    remove: (nodeId) => void nodes.delete(nodeId),
    planeFor: (nodeId, handlers) => {
      nodes.set(nodeId, handlers)
      return {
        probe: (node, serverId, epoch, timeout) =>
          Effect.suspend(() => {
            const target = nodes.get(node)?.()
            if (target === undefined) return Effect.succeed("gone" as const)
            return target.probeLocal(serverId, epoch).pipe(
              Effect.map((alive) => alive ? "alive" as const : "dead" as const),
              Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.succeed("dead" as const) })
            )
          }),
        tellLost: (node, serverId, epoch) => {
          const target = nodes.get(node)?.()
          if (target === undefined) return
          lost.push(`${node}:${serverId}:${epoch}`)
          queued.push(target.claimLost(serverId, epoch))
        },
        send: (node, outgoing) => {
          const target = nodes.get(node)?.()
          if (target === undefined) return true
          // As it would arrive: through the wire's bytes.
          const message = decode(encode(outgoing)).messages[0]!
          relayed.push({ node, message })
          if (message._tag === "Probe" || message._tag === "ProbeAnswer" || message._tag === "ClaimLost") return true
          queued.push(Effect.suspend(() => target.relay([message]) ?? Effect.void))
          return true
        }
      }
    }
  }
}
