/**
 * Per-IP upgrade rate limit (SPEC §7.1): a token bucket per source IP, burst N, one token back
 * every R. Refill keeps fractional time: a bucket refilled for 1.5 R gains one token and keeps
 * 0.5 R of credit toward the next, so a client retrying at any cadence gets exactly one upgrade
 * per R in the long run.
 *
 * Checked first on both WebSocket paths; a denied attempt stops there and never takes a
 * connection slot (the HTTP layer calls `take` before `ConnectionCaps.tryAcquire`).
 *
 * State ownership: the bucket map lives in `makeBuckets` and is touched only by its synchronous
 * methods, so every `take` and every sweep is atomic with respect to other fibers.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { RelayConfig } from "../config/RelayConfig.ts"

/** A bucket forgotten before this much quiet could hand a hammering client a fresh burst. */
export const IDLE_AFTER: Duration.Duration = Duration.seconds(120)
export const SWEEP_EVERY: Duration.Duration = Duration.minutes(5)

interface Bucket {
  /** Whole tokens available. */
  tokens: number
  /**
   * The instant refill is counted from. Only whole periods are credited and this advances by
   * exactly those periods, so the remainder (the fractional time) carries over. Reset to "now"
   * while the bucket is full: a full bucket earns nothing.
   */
  refilledAt: number
  /** Last attempt, allowed or denied: an IP that keeps hammering is never idle. */
  lastSeen: number
}

export interface BucketsOptions {
  /** Tokens in a full bucket; 0 disables the limit. */
  readonly burst: number
  /** One token comes back per this many milliseconds. */
  readonly refillMillis: number
  /** A bucket unused for at least this long is dropped by `sweep` (default 120 s). */
  readonly idleMillis?: number
}

export interface Buckets {
  /** One attempt by `ip` at `now` (ms): `true` if a token was taken. */
  readonly take: (ip: string | undefined, now: number) => boolean
  /** Returns the token `take` just gave `key` (its use was refused further on, so it did not count). */
  readonly giveBack: (key: string) => void
  /** Drops idle buckets; returns how many were dropped. */
  readonly sweep: (now: number) => number
  readonly size: () => number
}

/** The pure core: time is passed in, so tests and the service share one implementation. */
export const makeBuckets = (options: BucketsOptions): Buckets => {
  const { burst, refillMillis } = options
  const idleMillis = options.idleMillis ?? Duration.toMillis(IDLE_AFTER)
  const buckets = new Map<string, Bucket>()

  const refill = (bucket: Bucket, now: number): void => {
    if (bucket.tokens >= burst) {
      bucket.refilledAt = now
      return
    }
    const elapsed = now - bucket.refilledAt
    // A non-positive period means "no throttling": refill straight to full.
    const periods = refillMillis > 0 ? Math.floor(elapsed / refillMillis) : burst
    if (periods <= 0) return
    const tokens = bucket.tokens + periods
    if (tokens >= burst) {
      bucket.tokens = burst
      bucket.refilledAt = now
    } else {
      bucket.tokens = tokens
      bucket.refilledAt += periods * refillMillis
    }
  }

  const take = (ip: string | undefined, now: number): boolean => {
    if (burst <= 0) return true
    if (ip === undefined) return false
    let bucket = buckets.get(ip)
    if (bucket === undefined) {
      bucket = { tokens: burst, refilledAt: now, lastSeen: now }
      buckets.set(ip, bucket)
    } else {
      refill(bucket, now)
      bucket.lastSeen = now
    }
    if (bucket.tokens <= 0) return false
    bucket.tokens--
    return true
  }

  const sweep = (now: number): number => {
    let dropped = 0
    for (const [ip, bucket] of buckets) {
      if (now - bucket.lastSeen < idleMillis) continue
      // Forgetting a bucket is the same as refilling it to full. With a slow refill (burst × R
      // above the idle time) that would be a gift, so such a bucket waits until it is full.
      refill(bucket, now)
      if (bucket.tokens < burst) continue
      buckets.delete(ip)
      dropped++
    }
    return dropped
  }

  const giveBack = (key: string): void => {
    const bucket = buckets.get(key)
    if (bucket !== undefined && bucket.tokens < burst) bucket.tokens++
  }

  return { take, giveBack, sweep, size: () => buckets.size }
}

export interface RateLimiterShape {
  /** `false` → answer 429. An undeterminable IP (`undefined`) is denied and gets no bucket. */
  readonly take: (ip: string | undefined) => Effect.Effect<boolean>
  /** Live buckets (for tests and diagnostics). */
  readonly size: () => number
}

export interface RateLimiterOptions {
  readonly burst: number
  readonly refill: Duration.Input
  readonly idleAfter?: Duration.Input
  readonly sweepEvery?: Duration.Input
}

/** Builds the limiter and forks its sweeper into the current scope. Time comes from `Clock`. */
export const makeRateLimiter = (options: RateLimiterOptions): Effect.Effect<RateLimiterShape, never, Scope.Scope> =>
  Effect.gen(function*() {
    if (options.burst <= 0) {
      return RateLimiter.of({ take: () => Effect.succeed(true), size: () => 0 })
    }
    const buckets = makeBuckets({
      burst: options.burst,
      refillMillis: Duration.toMillis(options.refill),
      idleMillis: Duration.toMillis(options.idleAfter ?? IDLE_AFTER)
    })
    yield* Effect.sleep(options.sweepEvery ?? SWEEP_EVERY).pipe(
      Effect.andThen(Clock.clockWith((clock) => Effect.sync(() => buckets.sweep(clock.currentTimeMillisUnsafe())))),
      Effect.forever,
      Effect.forkScoped
    )
    return RateLimiter.of({
      take: (ip) => Clock.clockWith((clock) => Effect.sync(() => buckets.take(ip, clock.currentTimeMillisUnsafe()))),
      size: buckets.size
    })
  })

export class RateLimiter extends Context.Service<RateLimiter, RateLimiterShape>()("pyrycode-relay/RateLimiter") {
  /** From `rateLimitBurst` / `rateLimitRefill`; the sweeper lives as long as the layer. */
  static readonly layer = Layer.effect(
    RateLimiter,
    Effect.gen(function*() {
      const config = yield* RelayConfig
      return yield* makeRateLimiter({ burst: config.rateLimitBurst, refill: config.rateLimitRefill })
    })
  )
}
