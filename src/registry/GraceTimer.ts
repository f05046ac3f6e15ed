/**
 * How the registry schedules a grace expiry (SPEC §3.4): a fiber in the registry's scope that
 * sleeps the grace period on Effect's `Clock`, then fires. Cancelling interrupts it, so a
 * cancelled or replaced grace leaves no fiber behind.
 *
 * Interruption is one of the two guards against a stale fire; the other is the identity token the
 * expiry checks in the registry. They are separate on purpose: a test can run the registry on a
 * timer that never interrupts and so pin the token check alone (test/unit/grace-races.test.ts).
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

export interface GraceTimer {
  /** Runs `fire` once `delay` has passed; the returned function cancels it (synchronously). */
  readonly start: (delay: Duration.Duration, fire: Effect.Effect<void>) => Effect.Effect<() => void>
}

/** The timer the relay runs on: a fiber forked into `scope`, interrupted on cancel. */
export const interruptingTimer = (scope: Scope.Scope): GraceTimer => ({
  start: (delay, fire) =>
    Effect.map(
      Effect.forkIn(Effect.andThen(Effect.sleep(delay), fire), scope),
      (fiber) => () => fiber.interruptUnsafe()
    )
})
