/**
 * The cluster registry's timing and transitions on `TestClock`, over an in-memory store with the
 * scripts' semantics (test/support/MemoryOwnership.ts; the scripts themselves are tested against a
 * real Redis): grace deadlines kept and counted once cluster-wide, retries while Redis does not
 * answer, a grace taken elsewhere, the cluster-wide phone cap, and what a node does when its
 * claims turn out to be lost (CLUSTER.md §2.2, §2.4, §2.7, §2.8).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { TestClock } from "effect/testing"
import { type ClusterRegistryShape, makeClusterRegistry } from "../../src/cluster/ClusterRegistry.ts"
import type { OwnershipStore } from "../../src/cluster/Ownership.ts"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import { binaryHandle, count, isolated, phoneHandle, settle } from "../support/Core.ts"
import { makeFakeConnection } from "../support/FakeConnection.ts"
import { makeMemoryRedis, type MemoryRedis, memoryOwnership } from "../support/MemoryOwnership.ts"
import { makeMemoryPlanes, type MemoryPlanes } from "../support/MemoryPlane.ts"

const GRACE = Duration.seconds(30)
const CAP = 3

const PROBE = Duration.seconds(10)

/** A node on the shared fake Redis, reachable through `planes` (one set per test); `wrap` may stand between it and Redis. */
const node = (
  redis: MemoryRedis,
  nodeId = "a",
  planes: MemoryPlanes = makeMemoryPlanes(),
  wrap: (store: OwnershipStore) => OwnershipStore = (store) => store
) =>
  Effect.gen(function*() {
    let registry: ClusterRegistryShape | undefined
    const plane = planes.planeFor(nodeId, () => registry?.planeHandlers)
    registry = yield* makeClusterRegistry({
      gracePeriod: GRACE,
      maxPhonesPerServer: CAP,
      scope: yield* Effect.scope,
      store: wrap(memoryOwnership(redis, nodeId)),
      plane,
      probeTimeout: PROBE
    })
    return registry
  })

type Node = Effect.Success<ReturnType<typeof node>>

const claimed = (registry: Node, serverId: string, expected = "Claimed") =>
  Effect.gen(function*() {
    const conn = yield* makeFakeConnection()
    const handle = binaryHandle(serverId, conn)
    const result = yield* registry.claim(handle)
    assert.strictEqual(result._tag, expected)
    return { handle, conn }
  })

const registered = (registry: Node, serverId: string) =>
  Effect.gen(function*() {
    const conn = yield* makeFakeConnection()
    const handle = yield* registry.registerPhone(serverId, phoneHandle(conn))
    return { handle, conn }
  })

/** A binary holding `serverId` on `registry`, with one phone. */
const pair = (registry: Node, serverId: string) =>
  Effect.gen(function*() {
    const binary = yield* claimed(registry, serverId)
    const phone = yield* registered(registry, serverId)
    return { binary, phone }
  })

/** One node on a fresh fake Redis, its binary holding `s` with one phone: where most cases start. */
const pairOnOneNode = Effect.gen(function*() {
  const redis = makeMemoryRedis()
  const registry = yield* node(redis)
  return { redis, registry, ...(yield* pair(registry, "s")) }
})

const failureTag = <A, E extends { readonly _tag: string }>(exit: Exit.Exit<A, E>) =>
  Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail")?.error._tag : undefined

describe("cluster grace (CLUSTER.md §2.4)", () => {
  it.effect("expires at the grace period, not before: phones 1000, one expiry, the slot gone from Redis", () =>
    isolated(Effect.gen(function*() {
      const { redis, registry, binary: a, phone: p } = yield* pairOnOneNode
      assert.deepStrictEqual([...redis.phones.get("s")!.keys()], [p.handle.connId])
      yield* registry.release(a.handle)
      assert.strictEqual(redis.slots.get("s")?.state, "grace")

      yield* TestClock.adjust("29 seconds")
      assert.deepStrictEqual(p.conn.closeCalls, [])
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)

      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Normal])
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
      assert.isFalse(redis.slots.has("s"))
      assert.isFalse(redis.phones.has("s"))
      assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 0 })
      yield* TestClock.adjust("5 minutes")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
    })))

  it.effect("when Redis's clock says the grace is not due yet, asks again exactly when it is", () =>
    isolated(Effect.gen(function*() {
      const { redis, registry, binary: a, phone: p } = yield* pairOnOneNode
      // The release reaches Redis 2 s after this node's timer started (as if Redis had been
      // slow): Redis's deadline lands 2 s after the timer fires.
      redis.skewMillis = 2_000
      yield* registry.release(a.handle)
      redis.skewMillis = 0
      yield* TestClock.adjust("30 seconds")
      assert.deepStrictEqual(p.conn.closeCalls, [])
      assert.deepStrictEqual(redis.calls.filter((c) => c === "expire"), ["expire"])
      yield* TestClock.adjust("1999 millis")
      assert.deepStrictEqual(p.conn.closeCalls, [])
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Normal])
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
    })))

  it.effect("while Redis does not answer, the grace waits (phones stay, nothing counted) and expires at the first answer", () =>
    isolated(Effect.gen(function*() {
      const { redis, registry, binary: a, phone: p } = yield* pairOnOneNode
      yield* registry.release(a.handle)
      redis.down = true
      yield* TestClock.adjust("30 seconds")
      yield* TestClock.adjust("10 seconds")
      assert.deepStrictEqual(p.conn.closeCalls, [])
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      // Asked once at 30 s, then once a second.
      assert.strictEqual(redis.calls.filter((c) => c === "expire").length, 11)
      redis.down = false
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Normal])
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
    })))

  it.effect("a binary that reclaims on another node: this node's phones get 4404 at its expiry, which counts nothing", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const a = yield* node(redis, "a")
      const b = yield* node(redis, "b")
      const { binary, phone: p } = yield* pair(a, "s")
      yield* a.release(binary.handle)
      yield* claimed(b, "s", "Reclaimed")
      assert.strictEqual(yield* count(Metrics.graceReclaims), 1)
      yield* TestClock.adjust("30 seconds")
      assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Reclaimed])
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      assert.strictEqual(redis.slots.get("s")?.node, "b")
      assert.deepStrictEqual(yield* a.counts, { binaries: 0, phones: 0 })
    })))

  it.effect("reclaimed on this node: the grace is cancelled in Redis and here, never expired", () =>
    isolated(Effect.gen(function*() {
      const { redis, registry, binary: first, phone: p } = yield* pairOnOneNode
      yield* registry.release(first.handle)
      const epoch = redis.slots.get("s")!.epoch
      const second = yield* claimed(registry, "s", "Reclaimed")
      assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Reclaimed])
      assert.strictEqual(redis.slots.get("s")?.state, "live")
      assert.notStrictEqual(redis.slots.get("s")?.epoch, epoch)
      yield* TestClock.adjust("2 minutes")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      assert.strictEqual(registry.binaryFor("s"), second.handle)
    })))
})

describe("cluster claims and phones", () => {
  it.effect("a live binary on another node is probed through its node: it answers, nothing changes (the newcomer gets 4409)", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const planes = makeMemoryPlanes()
      const a = yield* node(redis, "a", planes)
      const b = yield* node(redis, "b", planes)
      yield* claimed(a, "s")
      const epoch = redis.slots.get("s")!.epoch
      const conflict = yield* b.claim(binaryHandle("s", yield* makeFakeConnection()))
      assert.strictEqual(conflict._tag, "Conflict")
      if (conflict._tag !== "Conflict") return
      assert.isTrue(Exit.isSuccess(yield* Effect.exit(conflict.incumbent.conn.ping)))
      assert.strictEqual(redis.slots.get("s")?.epoch, epoch)
      // A phone on the other node is served by a stand-in for the binary on a (CLUSTER.md §2.2).
      const far = yield* registered(b, "s")
      assert.isDefined(far.handle.servedBy.remote)
      assert.strictEqual(b.binaryFor("s"), far.handle.servedBy)
      // A server-id Redis does not know is asked once more after 250 ms (a claim may be in flight), then refused.
      const nobody = yield* Effect.forkChild(Effect.exit(registered(b, "nobody")))
      yield* settle
      yield* TestClock.adjust("250 millis")
      assert.strictEqual(failureTag(yield* Fiber.join(nobody)), "NoServer")
    })))

  it.effect("a phone that reaches Redis before its binary's claim (a claim in flight after the 101) waits 250 ms and is served", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const planes = makeMemoryPlanes()
      const a = yield* node(redis, "a", planes)
      const b = yield* node(redis, "b", planes)
      const early = yield* Effect.forkChild(Effect.exit(registered(a, "s")))
      yield* settle
      yield* TestClock.adjust("100 millis")
      assert.isUndefined(early.pollUnsafe())
      yield* claimed(b, "s")
      yield* TestClock.adjust("150 millis")
      const phone = yield* Fiber.join(early)
      assert.isTrue(Exit.isSuccess(phone))
      if (Exit.isSuccess(phone)) assert.isDefined(phone.value.handle.servedBy.remote)
    })))

  it.effect("an incumbent on another node that does not answer its node's ping: taken over, its node closes it 1011 and its phones 4404, counted once", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const planes = makeMemoryPlanes()
      const a = yield* node(redis, "a", planes)
      const b = yield* node(redis, "b", planes)
      const silent = yield* makeFakeConnection({ answersPings: false })
      const incumbent = binaryHandle("s", silent)
      assert.strictEqual((yield* a.claim(incumbent))._tag, "Claimed")
      const p = yield* registered(a, "s")
      const newcomer = binaryHandle("s", yield* makeFakeConnection())
      const conflict = yield* b.claim(newcomer)
      if (conflict._tag !== "Conflict") return assert.fail(conflict._tag)
      const pinged = yield* Effect.forkChild(Effect.exit(conflict.incumbent.conn.ping))
      yield* TestClock.adjust("10 seconds")
      assert.isTrue(Exit.isFailure(yield* Fiber.join(pinged)))
      assert.strictEqual(yield* b.takeover(newcomer, conflict.incumbent), "TookOver")
      assert.strictEqual(redis.slots.get("s")?.node, "b")
      assert.strictEqual(b.binaryFor("s"), newcomer)
      yield* planes.deliver
      assert.deepStrictEqual(silent.closeCalls, [CloseCodes.HeartbeatTimeout])
      assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Reclaimed])
      assert.isUndefined(a.binaryFor("s"))
      assert.strictEqual(yield* count(Metrics.takeovers), 1)
    })))

  it.effect("an incumbent whose node is gone: the probe fails at once and the newcomer takes over", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const planes = makeMemoryPlanes()
      const a = yield* node(redis, "a", planes)
      const b = yield* node(redis, "b", planes)
      yield* claimed(a, "s")
      planes.remove("a")
      const newcomer = binaryHandle("s", yield* makeFakeConnection())
      const conflict = yield* b.claim(newcomer)
      if (conflict._tag !== "Conflict") return assert.fail(conflict._tag)
      assert.isTrue(Exit.isFailure(yield* Effect.exit(conflict.incumbent.conn.ping)))
      assert.strictEqual(yield* b.takeover(newcomer, conflict.incumbent), "TookOver")
      assert.strictEqual(yield* count(Metrics.takeovers), 1)
    })))

  it.effect("a reclaim of another node's grace tells that node at once: its phones get 4404", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const planes = makeMemoryPlanes()
      const a = yield* node(redis, "a", planes)
      const b = yield* node(redis, "b", planes)
      const { binary: first, phone: p } = yield* pair(a, "s")
      yield* a.release(first.handle)
      yield* claimed(b, "s", "Reclaimed")
      yield* planes.deliver
      assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Reclaimed])
      assert.strictEqual(yield* count(Metrics.graceReclaims), 1)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
    })))

  it.effect("a ghost of this node (a claim in Redis whose binary is not here) is replaced at once", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      redis.slots.set("s", { state: "live", node: "a", epoch: "5", deadline: undefined })
      const registry = yield* node(redis, "a")
      yield* claimed(registry, "s")
      assert.notStrictEqual(redis.slots.get("s")?.epoch, "5")
      assert.strictEqual(yield* count(Metrics.takeovers), 0)
    })))

  it.effect("Redis unanswered: claims Unavailable and registrations RegistryUnavailable; nothing changes here", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const registry = yield* node(redis)
      yield* claimed(registry, "held")
      redis.down = true
      yield* claimed(registry, "s", "Unavailable")
      assert.isUndefined(registry.binaryFor("s"))
      assert.strictEqual(failureTag(yield* Effect.exit(registered(registry, "held"))), "RegistryUnavailable")
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 0 })
    })))

  it.effect("the phone cap is cluster-wide: other nodes' phones count; this node's leftovers in Redis do not", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const registry = yield* node(redis, "a")
      yield* claimed(registry, "s")
      const mine = yield* registered(registry, "s")
      const phones = redis.phones.get("s")!
      phones.set("client-s-elsewhere1", "b")
      phones.set("client-s-elsewhere2", "b")
      assert.strictEqual(failureTag(yield* Effect.exit(registered(registry, "s"))), "PhonesAtCap")
      // One of b's phones leaves; a leftover entry of this node (its unregistration never reached
      // Redis) does not hold a place.
      phones.delete("client-s-elsewhere2")
      phones.set("client-s-leftover", "a")
      yield* registered(registry, "s")
      assert.isFalse(phones.has("client-s-leftover"))
      assert.isTrue(phones.has(mine.handle.connId))
      assert.strictEqual(phones.size, 3)
    })))

  it.effect("a conn_id another node's phone already has is drawn again, for this node's claims and others'; three clashes in a row refuse the phone", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const planes = makeMemoryPlanes()
      const drawn: Array<string> = []
      /** How many of the next registrations Redis answers `duplicate`. */
      let clashes = 0
      const a = yield* node(redis, "a", planes, (store) => ({
        ...store,
        register: (serverId, connId, cap, expected, live) => {
          drawn.push(connId)
          if (clashes === 0) return store.register(serverId, connId, cap, expected, live)
          clashes--
          return Effect.succeed({ _tag: "Duplicate" })
        }
      }))
      const b = yield* node(redis, "b", planes)
      yield* claimed(a, "here")
      yield* claimed(b, "there")
      for (const serverId of ["here", "there"]) {
        drawn.length = 0
        clashes = 2
        const phone = yield* registered(a, serverId)
        assert.strictEqual(new Set(drawn).size, 3)
        assert.strictEqual(phone.handle.connId, drawn[2])
        assert.isTrue(redis.phones.get(serverId)!.has(drawn[2]!))
        clashes = 3
        const refused = yield* Effect.exit(registered(a, serverId))
        const error = Exit.isFailure(refused) ? refused.cause.reasons.find((r) => r._tag === "Fail")?.error : undefined
        assert.deepStrictEqual(error?._tag === "RegistryUnavailable" ? error.reason : error?._tag, "conn_id clash")
      }
    })))

  it.effect("a phone's unregistration leaves Redis too", () =>
    isolated(Effect.gen(function*() {
      const { redis, registry, phone: p } = yield* pairOnOneNode
      yield* registry.unregisterPhone(p.handle)
      assert.strictEqual(redis.phones.get("s")?.size, 0)
    })))
})

describe("claims checked after a lapse (CLUSTER.md §2.7, §2.8)", () => {
  it.effect("a claim Redis lost (empty restart) is restored with its epoch and phones", () =>
    isolated(Effect.gen(function*() {
      const { redis, registry, phone: p } = yield* pairOnOneNode
      const epoch = redis.slots.get("s")!.epoch
      redis.slots.clear()
      redis.phones.clear()
      yield* registry.checkClaims
      assert.deepStrictEqual(redis.slots.get("s"), { state: "live", node: "a", epoch, deadline: undefined })
      assert.isTrue(redis.phones.get("s")!.has(p.handle.connId))
      assert.deepStrictEqual(p.conn.closeCalls, [])
    })))

  it.effect("a claim a newer one replaced: the stale binary is closed 1011 and its phones 4404, nothing counted", () =>
    isolated(Effect.gen(function*() {
      const { redis, registry, binary, phone: p } = yield* pairOnOneNode
      redis.slots.set("s", { state: "live", node: "b", epoch: `${BigInt(redis.slots.get("s")!.epoch) + 1n}`, deadline: undefined })
      yield* registry.checkClaims
      yield* settle
      assert.deepStrictEqual(binary.conn.closeCalls, [CloseCodes.HeartbeatTimeout])
      assert.deepStrictEqual(p.conn.closeCalls, [CloseCodes.Reclaimed])
      assert.isUndefined(registry.binaryFor("s"))
      assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 0 })
      assert.strictEqual(yield* count(Metrics.takeovers), 0)
    })))

  it.effect("drain hands every live claim to grace in Redis first", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const registry = yield* node(redis)
      yield* claimed(registry, "s")
      yield* claimed(registry, "t")
      yield* registry.handOver
      assert.strictEqual(redis.slots.get("s")?.state, "grace")
      assert.strictEqual(redis.slots.get("t")?.state, "grace")
    })))
})
