/**
 * When certificates are ordered (EDGE.md §1), as one loop on Effect's `Clock` so `TestClock`
 * drives it: an order at once when there is no certificate, renewal when less than a third of the
 * certificate's lifetime remains, a check at least every 12 h in between, and failed orders
 * retried after 1 min, doubling to at most 1 h. The loop never ends on its own and never fails:
 * a CA problem is logged and retried, the process stays up.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"

/** A certificate's validity window, in milliseconds since the epoch. */
export interface Validity {
  readonly notBefore: number
  readonly notAfter: number
}

export const CHECK_INTERVAL: Duration.Duration = Duration.hours(12)
export const FIRST_RETRY: Duration.Duration = Duration.minutes(1)
export const LONGEST_RETRY: Duration.Duration = Duration.hours(1)

/** The moment a third of the lifetime remains (day 60 of a 90-day certificate). */
export const renewalTime = (validity: Validity): number =>
  validity.notAfter - (validity.notAfter - validity.notBefore) / 3

/** Whether a certificate with this validity should be replaced at `now`. */
export const isDue = (validity: Validity, now: number): boolean => now >= renewalTime(validity)

/** The wait after the `failures`-th failure in a row (1 → 1 min, 2 → 2 min, … at most 1 h). */
export const retryDelay = (failures: number): Duration.Duration => {
  const millis = Duration.toMillis(FIRST_RETRY) * 2 ** Math.max(0, failures - 1)
  return Duration.millis(Math.min(millis, Duration.toMillis(LONGEST_RETRY)))
}

/** How long to sleep before looking again at a certificate that is not yet due. */
export const nextCheck = (validity: Validity, now: number): Duration.Duration =>
  Duration.millis(Math.max(0, Math.min(Duration.toMillis(CHECK_INTERVAL), renewalTime(validity) - now)))

export interface RenewalOptions<E> {
  /** The certificate being served, if any (read fresh at every check). */
  readonly current: () => Validity | undefined
  /** Obtains a certificate and starts serving it. */
  readonly order: Effect.Effect<void, E>
  /** Told of each failed order, with how many failed in a row (logging and counting). */
  readonly failed: (error: E, failures: number) => Effect.Effect<void>
}

/**
 * The renewal loop. After a successful order whose certificate is already due (a CA issuing very
 * short certificates, or a wrong clock), it waits like after a first failure rather than ordering
 * again at once, so it can never hammer the CA.
 */
export const renewalLoop = <E>(options: RenewalOptions<E>): Effect.Effect<never> =>
  Effect.gen(function*() {
    let failures = 0
    for (;;) {
      const now = yield* Clock.currentTimeMillis
      const validity = options.current()
      if (validity !== undefined && !isDue(validity, now)) {
        yield* Effect.sleep(nextCheck(validity, now))
        continue
      }
      const outcome = yield* Effect.result(options.order)
      if (Result.isFailure(outcome)) {
        failures++
        yield* options.failed(outcome.failure, failures)
        yield* Effect.sleep(retryDelay(failures))
        continue
      }
      failures = 0
      const issued = options.current()
      if (issued === undefined || isDue(issued, yield* Clock.currentTimeMillis)) yield* Effect.sleep(retryDelay(1))
    }
  })
