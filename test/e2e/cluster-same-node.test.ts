/**
 * CLUSTER.md §2 with both ends on one node: a relay started with `--cluster-redis` (ownership,
 * grace and the phone cap in a real Redis) must behave exactly like a single process. The
 * routing, claim/grace/phone and liveness cases of the single-process suite run here again,
 * unchanged, against one-node clusters on a real `redis-server`.
 */
import { afterAll } from "vitest"
import { redisServerBinary, startRedis, warnIfNoRedis } from "../support/RedisServer.ts"
import { CLUSTER_REDIS_FOR_TESTS } from "../support/RelayProcess.ts"

warnIfNoRedis("cluster-same-node.test.ts")

if (redisServerBinary !== undefined) {
  const redis = await startRedis()
  process.env[CLUSTER_REDIS_FOR_TESTS] = redis.url
  // Registered first, so it runs after the imported files have stopped their relays.
  afterAll(() => redis.stop())
  await import("./routing.test.ts")
  await import("./rejections.test.ts")
  await import("./liveness.test.ts")
}
