/**
 * The relay's own life: accepting, then draining (SPEC §10). Relay-wide, one per relay, not per
 * session: shutdown (the public listener's finalizer) flips it once; `/readyz`, the upgrade gate
 * and the conflict probe of every session read it.
 */
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

export interface LifecycleShape {
  readonly isDraining: () => boolean
  /** Completes when draining starts. */
  readonly draining: Effect.Effect<void>
  /** Starts draining; `true` only for the first call (a second signal is ignored). */
  readonly startDraining: Effect.Effect<boolean>
}

export class Lifecycle extends Context.Service<Lifecycle, LifecycleShape>()("pyrycode-relay/Lifecycle") {
  static readonly make = (): LifecycleShape => {
    const signal = Deferred.makeUnsafe<void>()
    return {
      isDraining: () => Deferred.isDoneUnsafe(signal),
      draining: Deferred.await(signal),
      startDraining: Effect.sync(() => Deferred.doneUnsafe(signal, Effect.void))
    }
  }
  static readonly layer = Layer.sync(Lifecycle, Lifecycle.make)
}
