/**
 * The per-IP upgrade rate limit across the cluster (SPEC §7.1, CLUSTER.md §3): one token bucket
 * per source IP for all nodes together, through `effect/persistence/RateLimiter` with its Redis
 * store — burst `--rate-limit-burst`, one token back every `--rate-limit-refill`, fractional time
 * kept (the store credits whole periods and carries the rest). A bucket's keys expire when it
 * would be full again, which is how idle buckets are swept in Redis; an IP that keeps hammering
 * keeps its bucket.
 *
 * A single process keeps `limits/RateLimiter.ts`: the library's memory store never forgets a
 * bucket, and SPEC §7.1 asks for idle buckets to be swept (docs/decisions.md).
 *
 * Every call has the connection's 2 s deadline. A call Redis does not answer lets the upgrade
 * through (counted under `cluster_redis_errors_total{op="ratelimit"}`): the claim or
 * registration behind it needs Redis too, and is refused if Redis is really gone.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Redis from "effect/persistence/Redis"
import * as RL from "effect/persistence/RateLimiter"
import type { RateLimiterShape } from "../limits/RateLimiter.ts"
import type { ClusterRedisShape } from "./ClusterRedis.ts"

/** The store's view of Redis: this node's connection, its deadline and its error count. */
const asRedis = (redis: ClusterRedisShape): Redis.Redis["Service"] => ({
  send: (command, ...args) => Effect.mapError(redis.send("ratelimit", command, ...args), (cause) => new Redis.RedisError({ cause })),
  eval: (script) => (...params) => Effect.mapError(redis.eval("ratelimit", script)(...params), (cause) => new Redis.RedisError({ cause })),
  subscribe: () => Effect.die("the rate limit store does not subscribe"),
  reserve: Effect.die("the rate limit store does not reserve connections")
})

export const makeClusterRateLimiter = (options: {
  readonly burst: number
  readonly refill: Duration.Duration
  readonly redis: ClusterRedisShape
  readonly prefix: string
}): Effect.Effect<RateLimiterShape> =>
  Effect.gen(function*() {
    if (options.burst <= 0) return { take: () => Effect.succeed(true), size: () => 0 }
    const store = yield* RL.makeStoreRedis({ prefix: `${options.prefix}:ratelimit:` }).pipe(
      Effect.provideService(Redis.Redis, asRedis(options.redis))
    )
    const limiter = yield* RL.make.pipe(Effect.provideService(RL.RateLimiterStore, store))
    // One token per refill period: a window of `burst` periods holds `burst` tokens.
    const window = Duration.times(options.refill, options.burst)
    const take = (ip: string | undefined): Effect.Effect<boolean> => {
      if (ip === undefined) return Effect.succeed(false)
      return limiter.consume({
        algorithm: "token-bucket",
        onExceeded: "fail",
        window,
        limit: options.burst,
        // Hash-tagged: the bucket's two keys land in one Redis Cluster slot.
        key: `{${ip}}`
      }).pipe(
        Effect.as(true),
        Effect.catchTag("RateLimiterError", (error) => Effect.succeed(error.reason._tag !== "RateLimitExceeded"))
      )
    }
    return { take, size: () => 0 }
  })
