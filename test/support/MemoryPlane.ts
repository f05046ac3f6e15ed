/**
 * In-process cross-node plane for unit tests: nodes made with `planeFor` reach each other's
 * handlers directly (the order of a real inbox is kept: one message at a time, in turn). A node
 * that was never made, or was `remove`d, is gone: its probes answer `gone`, like a `PUBLISH` that
 * reached nobody.
 */
import * as Effect from "effect/Effect"
import type { PlaneHandlers, PlaneShape } from "../../src/cluster/Plane.ts"

export interface MemoryPlanes {
  readonly planeFor: (nodeId: string, handlers: () => PlaneHandlers | undefined) => PlaneShape
  /** The node dies: nothing reaches it any more. */
  readonly remove: (nodeId: string) => void
  /** `ClaimLost` messages sent, as `node:serverId:epoch`. */
  readonly lost: Array<string>
  /** Delivers the `ClaimLost` messages sent so far, in order, in the caller's context. */
  readonly deliver: Effect.Effect<void>
}

export const makeMemoryPlanes = (): MemoryPlanes => {
  const nodes = new Map<string, () => PlaneHandlers | undefined>()
  const lost: Array<string> = []
  const queued: Array<Effect.Effect<void>> = []
  return {
    lost,
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
        }
      }
    }
  }
}
