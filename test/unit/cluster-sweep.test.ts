/**
 * The sweep and the reaper on `TestClock` (CLUSTER.md §2.4, §2.6), over the in-memory store: a
 * dead node's claims enter grace at the next reaper pass and are expired — and counted — once by
 * another node; the holder's own timer is left to win while it lives; this node's phones learn
 * within a second that their grace ended elsewhere.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { TestClock } from "effect/testing"
import { makeClusterRegistry } from "../../src/cluster/ClusterRegistry.ts"
import type { PlaneHandlers } from "../../src/cluster/Plane.ts"
import { makeSweep } from "../../src/cluster/Sweep.ts"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import { binaryHandle, count, isolated, phoneHandle } from "../support/Core.ts"
import { makeFakeConnection } from "../support/FakeConnection.ts"
import { makeMemoryRedis, type MemoryRedis, memoryOwnership } from "../support/MemoryOwnership.ts"
import { makeMemoryPlanes, type MemoryPlanes } from "../support/MemoryPlane.ts"

const GRACE = Duration.seconds(30)
const LEASE = Duration.seconds(15)

/** A node: its registry, and its sweep running in the test's scope; its lease is held. */
const node = (redis: MemoryRedis, nodeId: string, planes: MemoryPlanes = makeMemoryPlanes()) =>
  Effect.gen(function*() {
    const store = memoryOwnership(redis, nodeId)
    redis.leases.set(nodeId, `${nodeId}-token`)
    redis.members.add(nodeId)
    let handlers: PlaneHandlers | undefined
    const registry = yield* makeClusterRegistry({
      gracePeriod: GRACE,
      maxPhonesPerServer: 16,
      scope: yield* Effect.scope,
      store,
      plane: planes.planeFor(nodeId, () => handlers),
      probeTimeout: Duration.seconds(10)
    })
    handlers = registry.planeHandlers
    yield* Effect.forkScoped(
      makeSweep({ store, registry, gracePeriod: GRACE, leaseTtl: LEASE, redisTimeMillis: Clock.currentTimeMillis }).run
    )
    return registry
  })

const claim = (registry: Effect.Success<ReturnType<typeof node>>, serverId: string, expected = "Claimed") =>
  Effect.gen(function*() {
    const conn = yield* makeFakeConnection()
    const handle = binaryHandle(serverId, conn)
    assert.strictEqual((yield* registry.claim(handle))._tag, expected)
    return { handle, conn }
  })

const phone = (registry: Effect.Success<ReturnType<typeof node>>, serverId: string) =>
  Effect.gen(function*() {
    const conn = yield* makeFakeConnection()
    return { handle: yield* registry.registerPhone(serverId, phoneHandle(conn)), conn }
  })

describe("reaper and sweep", () => {
  it.effect("a dead node's live claim enters grace at the next reaper pass and is expired once, by another node, past the slack", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const a = yield* node(redis, "a")
      yield* node(redis, "b")
      yield* claim(a, "s")
      assert.isTrue(redis.claimIndex.get("a")?.has("s"))
      // a dies: its lease lapses (its registry no longer runs anything that matters here).
      redis.leases.delete("a")
      yield* TestClock.adjust("5 seconds")
      assert.strictEqual(redis.slots.get("s")?.state, "grace")
      assert.isFalse(redis.members.has("a"))
      assert.isFalse(redis.claimIndex.has("a"))
      const deadline = redis.slots.get("s")!.deadline!
      assert.strictEqual(redis.graceIndex.get("s"), deadline)
      // Not before the deadline plus the slack…
      yield* TestClock.adjust(Duration.millis(deadline - (yield* Clock.currentTimeMillis) + 1_000))
      assert.isTrue(redis.slots.has("s"))
      // …then exactly once.
      yield* TestClock.adjust("2 seconds")
      assert.isFalse(redis.slots.has("s"))
      assert.isFalse(redis.graceIndex.has("s"))
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
    })))

  it.effect("a binary returning during a reaped grace reclaims it (a reclaim, not a takeover), on any node", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const a = yield* node(redis, "a")
      const b = yield* node(redis, "b")
      yield* claim(a, "s")
      redis.leases.delete("a")
      yield* TestClock.adjust("5 seconds")
      yield* claim(b, "s", "Reclaimed")
      assert.strictEqual(yield* count(Metrics.graceReclaims), 1)
      assert.strictEqual(yield* count(Metrics.takeovers), 0)
      assert.isFalse(redis.graceIndex.has("s"))
      yield* TestClock.adjust("2 minutes")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
    })))

  it.effect("a live holder's own timer expires its grace; another node's sweep leaves it alone, so it counts once", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const a = yield* node(redis, "a")
      yield* node(redis, "b")
      const binary = yield* claim(a, "s")
      const p = yield* phone(a, "s")
      yield* a.release(binary.handle)
      assert.isTrue(redis.graceIndex.has("s"))
      yield* TestClock.adjust("30 seconds")
      assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Normal])
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
      assert.isFalse(redis.graceIndex.has("s"))
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
    })))

  it.effect("a grace of this node expired elsewhere: its phones here get 1000 within a second, nothing counted here", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const a = yield* node(redis, "a")
      const binary = yield* claim(a, "s")
      const p = yield* phone(a, "s")
      yield* a.release(binary.handle)
      // Another node expired (and counted) it.
      redis.slots.delete("s")
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Normal])
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      assert.deepStrictEqual(yield* a.counts, { binaries: 0, phones: 0 })
    })))

  it.effect("a reclaim on another node reaches this node's phones within a second (4404), not at its deadline", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const a = yield* node(redis, "a")
      const b = yield* node(redis, "b")
      const binary = yield* claim(a, "s")
      const p = yield* phone(a, "s")
      yield* a.release(binary.handle)
      yield* claim(b, "s", "Reclaimed")
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Reclaimed])
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      assert.strictEqual(yield* count(Metrics.graceReclaims), 1)
    })))
})
