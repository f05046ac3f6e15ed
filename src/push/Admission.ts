/**
 * Admission of a valid wake (PUSH.md §2 step 3): a token bucket per server-id, then the
 * relay-wide count of sends in flight. Synchronous and pure (time is passed in), so it runs on
 * the binary forwarder's pass without blocking or queueing, and `TestClock` drives it in tests.
 *
 * State ownership: the buckets and the in-flight count live here and change only in these
 * synchronous methods, so every admission is atomic with respect to other fibers.
 */
import { makeBuckets } from "../limits/RateLimiter.ts"

/** A bucket full again and unused this long is forgotten (forgetting a full bucket changes nothing). */
export const IDLE_BUCKET_MILLIS = 60_000

export type AdmissionRefusal = "rate limited" | "in-flight cap"

export interface AdmissionOptions {
  /** Wakes a server-id may send at once. */
  readonly burst: number
  /** One wake back every this many milliseconds. */
  readonly refillMillis: number
  /** Sends in flight relay-wide. */
  readonly maxInFlight: number
}

export interface Admission {
  /**
   * One wake for `serverId` at `now` (ms): `undefined` when admitted — a send must then start and
   * call `release` exactly once when it ends — or why not.
   */
  readonly admit: (serverId: string, now: number) => AdmissionRefusal | undefined
  readonly release: () => void
  readonly inFlight: () => number
  /** Live buckets (tests and diagnostics). */
  readonly buckets: () => number
}

export const makeAdmission = (options: AdmissionOptions): Admission => {
  const buckets = makeBuckets({ burst: options.burst, refillMillis: options.refillMillis, idleMillis: IDLE_BUCKET_MILLIS })
  let inFlight = 0
  let sweptAt = Number.NEGATIVE_INFINITY

  const admit = (serverId: string, now: number): AdmissionRefusal | undefined => {
    // Swept on use, at most once a minute: no timer, and the map cannot outgrow a minute of wakes.
    if (now - sweptAt >= IDLE_BUCKET_MILLIS) {
      sweptAt = now
      buckets.sweep(now)
    }
    if (!buckets.take(serverId, now)) return "rate limited"
    if (inFlight >= options.maxInFlight) {
      // Nothing was sent: the server-id keeps its token for when a send slot frees up.
      buckets.giveBack(serverId)
      return "in-flight cap"
    }
    inFlight++
    return undefined
  }

  return {
    admit,
    release: () => {
      inFlight--
    },
    inFlight: () => inFlight,
    buckets: buckets.size
  }
}
