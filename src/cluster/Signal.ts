/**
 * An event that recurs, for fibers to wait for its next occurrence: `fire` may be called from a
 * Node callback (it runs nothing), `next` completes at the first `fire` after it started waiting.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"

export interface Signal {
  readonly fire: () => void
  readonly next: Effect.Effect<void>
}

export const makeSignal = (): Signal => {
  let current = Deferred.makeUnsafe<void>()
  return {
    fire: () => {
      const fired = current
      current = Deferred.makeUnsafe<void>()
      Deferred.doneUnsafe(fired, Effect.void)
    },
    next: Effect.suspend(() => Deferred.await(current))
  }
}
