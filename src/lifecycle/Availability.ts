/**
 * Whether the shared registry can be reached (SPEC §1.6, CLUSTER.md §8), read by `/readyz` and by
 * the upgrade gate. A single process's registry is in memory and always reachable: that is the
 * default, a constant, so single-process mode does no work for it. In cluster mode the Redis
 * connection provides the real answer, and `nodeId` names this node in `/healthz`.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"

export interface AvailabilityShape {
  /** `false` while the cluster's Redis does not answer: upgrades and `/readyz` get 503. */
  readonly registryReachable: () => boolean
  /** This node's id in cluster mode; `undefined` for a single process. */
  readonly nodeId: string | undefined
  /** Counts one connection refused because the registry could not be reached. */
  readonly countUnreachable: Effect.Effect<void>
}

const always = (): boolean => true

export const Availability = Context.Reference<AvailabilityShape>("pyrycode-relay/Availability", {
  defaultValue: () => ({ registryReachable: always, nodeId: undefined, countUnreachable: Effect.void })
})
