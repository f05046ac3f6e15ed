/**
 * The cluster-wide rate limit's edges (`src/cluster/ClusterRateLimiter.ts`; the bucket itself is
 * exercised across two relay processes on a real Redis in test/e2e/cluster-nodes.test.ts): no IP
 * is denied without touching Redis, a Redis that does not answer lets the upgrade through (what
 * follows needs Redis and is refused there), and burst 0 turns the limit off.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { ClusterRedisShape } from "../../src/cluster/ClusterRedis.ts"
import { makeClusterRateLimiter } from "../../src/cluster/ClusterRateLimiter.ts"
import { RegistryUnavailable } from "../../src/domain/Errors.ts"

const failingRedis = (calls: Array<string>): ClusterRedisShape => ({
  eval: (op) => () => Effect.suspend(() => {
    calls.push(op)
    return Effect.fail(new RegistryUnavailable({ reason: "deadline" }))
  }),
  send: (op) => Effect.suspend(() => {
    calls.push(op)
    return Effect.fail(new RegistryUnavailable({ reason: "deadline" }))
  }),
  isUp: () => false,
  redisTimeMillis: Effect.succeed(0),
  generation: () => 0,
  nextGeneration: Effect.never,
  publish: () => Effect.die("unused"),
  subscribe: () => Effect.void,
  nextSubscriberStart: Effect.never
})

describe("cluster rate limit", () => {
  it.effect("no IP is denied without a call; a Redis that does not answer lets the upgrade through, under op ratelimit", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      const limiter = yield* makeClusterRateLimiter({ burst: 20, refill: Duration.seconds(6), redis: failingRedis(calls), prefix: "p" })
      assert.isFalse(yield* limiter.take(undefined))
      assert.deepStrictEqual(calls, [])
      assert.isTrue(yield* limiter.take("10.0.0.1"))
      assert.deepStrictEqual(calls, ["ratelimit"])
    }))

  it.effect("burst 0 turns the limit off: every attempt passes, Redis is never asked", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      const limiter = yield* makeClusterRateLimiter({ burst: 0, refill: Duration.seconds(6), redis: failingRedis(calls), prefix: "p" })
      assert.isTrue(yield* limiter.take("10.0.0.1"))
      assert.isTrue(yield* limiter.take(undefined))
      assert.deepStrictEqual(calls, [])
    }))
})
