/**
 * Whether the cluster's Redis answers (CLUSTER.md §1, §8): a `TIME` every second with a 1 s
 * deadline. Two misses in a row mark Redis down (`cluster_redis_up` 0, `/readyz` 503, upgrades
 * 503); the next answer marks it up again. The same answer keeps an estimate of Redis's clock
 * against this node's `Clock`. Each transition is logged once, with an error code at most.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { countError, withDeadline } from "./RedisCall.ts"
import type { Connected } from "./RedisConnection.ts"

export const HEALTH_INTERVAL = Duration.seconds(1)
const HEALTH_DEADLINE = Duration.seconds(1)
/** Consecutive health misses that mark Redis down (one slow answer is not an outage). */
const MISSES_FOR_DOWN = 2

/** `newGeneration`: Redis answers again after it was marked down (it may have restarted empty). */
export const makeRedisHealth = (newGeneration: () => void) => {
  /** `unknown` until the first attempt; each change to `up` or `down` is logged once. */
  let health: "unknown" | "up" | "down" = "unknown"
  let misses = 0
  /** Redis's clock minus ours, from the last health answer. */
  let offsetMillis = 0

  const markUp = Effect.suspend(() => {
    misses = 0
    if (health === "up") return Effect.void
    if (health === "down") newGeneration()
    health = "up"
    return Effect.andThen(Metric.update(Metrics.clusterRedisUp, 1), Log.info("cluster redis up"))
  })

  const markDown = (reason: string) =>
    Effect.suspend(() => {
      if (health === "down") return Effect.void
      health = "down"
      return Effect.andThen(Metric.update(Metrics.clusterRedisUp, 0), Log.warn("cluster redis down", { error: reason }))
    })

  /** A missed health check: down at the second in a row (or at once, before Redis was ever up). */
  const markMiss = (reason: string) =>
    Effect.suspend(() => {
      misses++
      return health === "up" && misses < MISSES_FOR_DOWN ? Effect.void : markDown(reason)
    })

  /** One health check: `TIME`, which also refreshes the clock offset. */
  const check = (c: Connected) =>
    Effect.gen(function*() {
      const sent = yield* Clock.currentTimeMillis
      const answer = yield* Effect.exit(withDeadline(c.redis.send<[string, string]>("TIME"), HEALTH_DEADLINE))
      if (Exit.isSuccess(answer)) {
        const received = yield* Clock.currentTimeMillis
        const [seconds, micros] = answer.value
        offsetMillis = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - Math.round((sent + received) / 2)
        return yield* markUp
      }
      yield* countError("health")
      const error = answer.cause.reasons.find((r) => r._tag === "Fail")?.error
      yield* markMiss(error?.reason ?? "error")
    })

  return {
    /** Whether Redis answered the last health check (or missed fewer than two in a row). */
    isUp: () => health === "up",
    markDown,
    check,
    /** Redis's clock now (ms), estimated from this node's `Clock` and the last health answer. */
    redisTimeMillis: Effect.map(Clock.currentTimeMillis, (now) => now + offsetMillis)
  }
}

export type RedisHealth = ReturnType<typeof makeRedisHealth>
