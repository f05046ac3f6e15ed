/**
 * `ClusterRedis.publish` against a real `redis-server`: the command is queued when called, but its
 * payload is read when node-redis writes it, at the end of the turn — so what the plane adds to a
 * batch after publishing it, in the same turn, goes with it (`src/cluster/Plane.ts`) — and read
 * once.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Redacted from "effect/Redacted"
import { makeClusterRedis } from "../../src/cluster/ClusterRedis.ts"
import { isolated } from "../support/Core.ts"
import { redisForSuite, redisServerBinary, warnIfNoRedis } from "../support/RedisServer.ts"

warnIfNoRedis("cluster-publish.test.ts")

describe.skipIf(redisServerBinary === undefined)("PUBLISH through the relay's Redis connection", () => {
  const redis = redisForSuite()

  it("the payload is read when the command is written: what is added in the same turn goes with it, read once", () =>
    Effect.runPromise(isolated(Effect.scoped(Effect.gen(function*() {
      const connection = yield* makeClusterRedis({ url: Redacted.make(redis().url) })
      const received = yield* Deferred.make<Buffer>()
      yield* connection.subscribe("lazy", (payload) => Deferred.doneUnsafe(received, Effect.succeed(Buffer.from(payload))))
      const parts = [Buffer.from("first;")]
      let reads = 0
      const published = yield* Effect.forkChild(
        connection.publish("lazy", () => {
          reads++
          return Buffer.concat(parts)
        }),
        { startImmediately: true }
      )
      // Same turn, after the PUBLISH was queued.
      parts.push(Buffer.from("second"))
      assert.strictEqual(reads, 0)
      const receivers = yield* Fiber.join(published)
      assert.strictEqual(receivers, 1)
      assert.strictEqual((yield* Deferred.await(received)).toString(), "first;second")
      assert.strictEqual(reads, 1)
    })))))
})
