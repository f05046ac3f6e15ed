/**
 * The node lease on `TestClock` (CLUSTER.md §2.6–2.7): renewed every third of `--lease-ttl`,
 * counted lost once a whole TTL passed without a confirmed renewal, a lapse found at renewal runs
 * the claim check once, and a node id held by another process is never shared.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { TestClock } from "effect/testing"
import { keepLease } from "../../src/cluster/NodeLease.ts"
import { makeSignal } from "../../src/cluster/Signal.ts"
import { isolated } from "../support/Core.ts"
import { makeMemoryRedis, memoryOwnership } from "../support/MemoryOwnership.ts"

const TTL = Duration.seconds(15)

const lease = (options: { readonly redis?: ReturnType<typeof makeMemoryRedis>; readonly token?: string } = {}) =>
  Effect.gen(function*() {
    const redis = options.redis ?? makeMemoryRedis()
    const store = memoryOwnership(redis, "a", options.token)
    let lapses = 0
    let generation = 0
    const changed = makeSignal()
    /** The Redis connection starts afresh (a reconnect). */
    const reconnect = () => {
      generation++
      changed.fire()
    }
    const held = yield* keepLease({
      ttl: TTL,
      generation: () => generation,
      nextGeneration: changed.next,
      lease: store.lease,
      resign: store.resign,
      onLapsed: Effect.sync(() => {
        lapses++
      })
    })
    return { redis, held, reconnect, lapses: () => lapses, renewals: () => redis.calls.filter((c) => c === "lease").length }
  })

describe("node lease", () => {
  it.effect("is taken at boot and renewed every third of the TTL", () =>
    isolated(Effect.gen(function*() {
      const l = yield* lease()
      assert.isTrue(l.held.held())
      assert.strictEqual(l.renewals(), 1)
      yield* TestClock.adjust("4999 millis")
      assert.strictEqual(l.renewals(), 1)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(l.renewals(), 2)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(l.renewals(), 4)
      assert.strictEqual(l.lapses(), 0)
    })))

  it.effect("while Redis does not answer, still held until a whole TTL since the last confirmed renewal, then not", () =>
    isolated(Effect.gen(function*() {
      const l = yield* lease()
      l.redis.down = true
      yield* TestClock.adjust("14999 millis")
      assert.isTrue(l.held.held())
      yield* TestClock.adjust("1 millis")
      assert.isFalse(l.held.held())
      l.redis.down = false
      // The key is still there (this fake has no TTL): the next renewal confirms it, no lapse.
      yield* TestClock.adjust("5 seconds")
      assert.isTrue(l.held.held())
      assert.strictEqual(l.lapses(), 0)
    })))

  it.effect("a renewal that finds the lease gone takes it again and runs the claim check, once", () =>
    isolated(Effect.gen(function*() {
      const l = yield* lease()
      l.redis.leases.clear()
      yield* TestClock.adjust("5 seconds")
      assert.strictEqual(l.lapses(), 1)
      assert.isTrue(l.held.held())
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(l.lapses(), 1)
    })))

  it.effect("another process's lease under this node id: not held, until it is released", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      redis.leases.set("a", "someone-else")
      const l = yield* lease({ redis })
      assert.isFalse(l.held.held())
      yield* TestClock.adjust("10 seconds")
      assert.isFalse(l.held.held())
      redis.leases.delete("a")
      yield* TestClock.adjust("5 seconds")
      assert.isTrue(l.held.held())
      // Taking a free lease is not a lapse of this process's own.
      assert.strictEqual(l.lapses(), 0)
    })))

  it.effect("after a reconnect (Redis may be a new, empty one) the lease is renewed at once and not held until then", () =>
    isolated(Effect.gen(function*() {
      const l = yield* lease()
      yield* TestClock.adjust("1 second")
      l.redis.down = true
      l.reconnect()
      yield* TestClock.adjust("0 millis")
      assert.strictEqual(l.renewals(), 2)
      assert.isFalse(l.held.held())
      l.redis.down = false
      // The empty Redis: the key is gone; the renewal takes it again and checks the claims.
      l.redis.leases.clear()
      l.reconnect()
      yield* TestClock.adjust("0 millis")
      assert.strictEqual(l.renewals(), 3)
      assert.strictEqual(l.lapses(), 1)
      assert.isTrue(l.held.held())
    })))

  it.effect("resign stops renewing and gives the lease up", () =>
    isolated(Effect.gen(function*() {
      const l = yield* lease()
      yield* l.held.resign
      assert.isFalse(l.held.held())
      assert.isFalse(l.redis.leases.has("a"))
      const before = l.renewals()
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(l.renewals(), before)
      assert.isFalse(l.redis.leases.has("a"))
    })))
})
