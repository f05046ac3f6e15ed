/**
 * The ownership scripts (`src/cluster/Scripts.ts`) against a real `redis-server`, through the
 * same connection and store the relay uses: every answer of every script, the compare-and-set on
 * the epoch, the cluster-wide cap, the late guard, and the lease. The unit tests' in-memory store
 * (test/support/MemoryOwnership.ts) claims these semantics; this file holds Redis to them.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Redacted from "effect/Redacted"
import { makeClusterRedis } from "../../src/cluster/ClusterRedis.ts"
import { clusterKeys } from "../../src/cluster/Keys.ts"
import { type OwnershipStore, redisOwnership } from "../../src/cluster/Ownership.ts"
import { isolated } from "../support/Core.ts"
import { redisForSuite, redisServerBinary, warnIfNoRedis } from "../support/RedisServer.ts"

warnIfNoRedis("cluster-scripts.test.ts")

let prefixes = 0

const run = <A, E>(effect: Effect.Effect<A, E, import("effect/Scope").Scope>) =>
  Effect.runPromise(isolated(Effect.scoped(effect)))

describe.skipIf(redisServerBinary === undefined)("ownership scripts on a real Redis", () => {
  const redis = redisForSuite()

  /** Two nodes' stores over one connection, under a fresh prefix. */
  const nodes = Effect.gen(function*() {
    const connection = yield* makeClusterRedis({ url: Redacted.make(redis().url) })
    const keys = clusterKeys(`scripts-${++prefixes}`)
    return {
      keys,
      a: redisOwnership(connection, keys, "a", "token-a"),
      b: redisOwnership(connection, keys, "b", "token-b"),
      connection
    }
  })

  const hget = async (key: string, field: string) => (await redis().command("HGET", key, field)).split("\r\n")[1]

  it("claim: first wins, a live holder is a conflict, a grace is reclaimed with its phones", () =>
    run(Effect.gen(function*() {
      const { a, b } = yield* nodes
      const first = yield* a.claim("s")
      assert.strictEqual(first._tag, "Claimed")
      const conflict = yield* b.claim("s")
      assert.deepStrictEqual(conflict, { _tag: "Conflict", node: "a", epoch: first._tag === "Claimed" ? first.epoch : "" })
      const epoch = first._tag === "Claimed" ? first.epoch : ""
      assert.strictEqual((yield* a.register("s", "client-s-1", 16, epoch, []))._tag, "Ok")
      assert.strictEqual((yield* a.release("s", epoch, Duration.seconds(30)))._tag, "Grace")
      const reclaimed = yield* b.claim("s")
      assert.strictEqual(reclaimed._tag, "Reclaimed")
      if (reclaimed._tag !== "Reclaimed") return
      assert.strictEqual(reclaimed.fromNode, "a")
      assert.deepStrictEqual(reclaimed.phones, [{ connId: "client-s-1", node: "a" }])
      assert.isTrue(BigInt(reclaimed.epoch) > BigInt(epoch))
      // The old claim's transitions are all refused now.
      assert.strictEqual((yield* a.release("s", epoch, Duration.seconds(30)))._tag, "Stale")
      assert.strictEqual((yield* a.expire("s", epoch))._tag, "Stale")
      assert.strictEqual((yield* a.takeover("s", epoch))._tag, "Superseded")
      assert.strictEqual((yield* a.takeover("nothing", epoch))._tag, "Missing")
    })))

  it("release and expire: not due before the deadline, expired exactly once, live-but-released expires at once", () =>
    run(Effect.gen(function*() {
      const { a, b, keys } = yield* nodes
      const claim = yield* a.claim("g")
      const epoch = claim._tag === "Claimed" ? claim.epoch : ""
      const released = yield* a.release("g", epoch, Duration.millis(300))
      assert.strictEqual(released._tag, "Grace")
      const early = yield* a.expire("g", epoch)
      assert.strictEqual(early._tag, "NotDue")
      if (early._tag === "NotDue") assert.isTrue(early.millis > 0 && early.millis <= 300)
      const ttl = Number((yield* Effect.promise(() => redis().command("PTTL", keys.server("g")))).slice(1))
      assert.isTrue(ttl > 300 && ttl <= 300 + 10 * 60_000)
      yield* Effect.sleep("350 millis")
      // Two nodes race the expiry: exactly one is told `expired`.
      const [x, y] = yield* Effect.all([a.expire("g", epoch), b.expire("g", epoch)], { concurrency: 2 })
      assert.sameMembers([x._tag, y._tag], ["Expired", "Gone"])
      assert.isUndefined(yield* a.holder("g"))

      const live = yield* a.claim("h")
      const liveEpoch = live._tag === "Claimed" ? live.epoch : ""
      // Another node may not end a live claim of this node's.
      assert.strictEqual((yield* b.expire("h", liveEpoch))._tag, "Stale")
      assert.strictEqual((yield* a.expire("h", liveEpoch))._tag, "Expired")
    })))

  it("register: no server first, the exact cap across nodes, duplicates refused, own leftovers pruned; unregister only its own", () =>
    run(Effect.gen(function*() {
      const { a, b } = yield* nodes
      assert.strictEqual((yield* b.register("p", "client-p-0", 3, "", []))._tag, "NoServer")
      const claim = yield* a.claim("p")
      const epoch = claim._tag === "Claimed" ? claim.epoch : ""
      assert.deepStrictEqual(yield* b.register("p", "client-p-1", 3, "", []), { _tag: "Ok", epoch, node: "a" })
      assert.strictEqual((yield* a.register("p", "client-p-1", 3, epoch, []))._tag, "Duplicate")
      assert.strictEqual((yield* a.register("p", "client-p-2", 3, "other-epoch", []))._tag, "Moved")
      assert.strictEqual((yield* a.register("p", "client-p-2", 3, epoch, []))._tag, "Ok")
      assert.strictEqual((yield* a.register("p", "client-p-3", 3, epoch, ["client-p-2"]))._tag, "Ok")
      // Full: b's phone and a's two count; a's entry not among its live phones is a leftover.
      assert.strictEqual((yield* a.register("p", "client-p-4", 3, epoch, ["client-p-2", "client-p-3"]))._tag, "AtCap")
      assert.strictEqual((yield* a.register("p", "client-p-4", 3, epoch, ["client-p-3"]))._tag, "Ok")
      // b cannot remove a's phone; a can.
      yield* b.unregister("p", "client-p-3")
      assert.strictEqual((yield* b.register("p", "client-p-5", 3, "", ["client-p-1"]))._tag, "AtCap")
      yield* a.unregister("p", "client-p-3")
      assert.strictEqual((yield* b.register("p", "client-p-5", 3, "", ["client-p-1"]))._tag, "Ok")
    })))

  it("assert: restores a claim Redis lost, keeps one it holds, loses to a newer epoch", () =>
    run(Effect.gen(function*() {
      const { a, b, keys } = yield* nodes
      const claim = yield* a.claim("r")
      const epoch = claim._tag === "Claimed" ? claim.epoch : ""
      assert.strictEqual((yield* a.assert("r", epoch, "live", Duration.zero, []))._tag, "Held")
      yield* Effect.promise(() => redis().command("DEL", keys.server("r"), keys.phones("r")))
      assert.strictEqual((yield* a.assert("r", epoch, "grace", Duration.seconds(5), ["client-r-1"]))._tag, "Restored")
      const restored = yield* a.holder("r")
      assert.deepStrictEqual(restored, { state: "grace", node: "a", epoch })
      assert.strictEqual(yield* Effect.promise(() => hget(keys.phones("r"), "client-r-1")), "a")
      const newer = yield* b.claim("r")
      assert.strictEqual(newer._tag, "Reclaimed")
      const lost = yield* a.assert("r", epoch, "live", Duration.zero, [])
      assert.deepStrictEqual(lost, { _tag: "Lost", node: "b", epoch: newer._tag === "Reclaimed" ? newer.epoch : "" })
    })))

  it("reaper: a dead node's live claim to grace once, its graces indexed, its index and membership forgotten unless it came back", () =>
    run(Effect.gen(function*() {
      const { a, b } = yield* nodes
      assert.strictEqual(yield* a.lease(Duration.seconds(5)), "lost")
      assert.deepStrictEqual(yield* b.members, ["a"])
      const claim = yield* a.claim("d")
      const epoch = claim._tag === "Claimed" ? claim.epoch : ""
      yield* a.indexClaim("d")
      assert.deepStrictEqual(yield* b.claimsOf("a"), ["d"])
      assert.strictEqual((yield* b.reap("d", "b", Duration.seconds(30)))._tag, "Other")
      const reaped = yield* b.reap("d", "a", Duration.millis(200))
      assert.strictEqual(reaped._tag, "Reaped")
      const again = yield* b.reap("d", "a", Duration.millis(200))
      assert.strictEqual(again._tag, "Grace")
      if (reaped._tag === "Other" || again._tag === "Other") return
      assert.strictEqual(reaped.epoch, epoch)
      assert.strictEqual(again.deadline, reaped.deadline)
      yield* b.indexGrace("d", reaped.deadline)
      assert.deepStrictEqual(yield* b.dueGraces(reaped.deadline - 1, 10), [])
      assert.deepStrictEqual(yield* b.dueGraces(reaped.deadline, 10), ["d"])
      // a still holds its lease: forgetting it does nothing.
      yield* b.forget("a")
      assert.deepStrictEqual(yield* b.members, ["a"])
      yield* a.resign
      yield* b.forget("a")
      assert.deepStrictEqual(yield* b.members, [])
      assert.deepStrictEqual(yield* b.claimsOf("a"), [])
      yield* Effect.sleep("250 millis")
      assert.strictEqual((yield* b.expire("d", epoch))._tag, "Expired")
      assert.strictEqual((yield* b.expire("d", epoch))._tag, "Gone")
    })))

  it("a claim that reaches Redis after its caller gave up changes nothing (late)", () =>
    run(Effect.gen(function*() {
      const { a, connection, keys } = yield* nodes
      // A store whose notion of Redis's clock is 10 s behind: its scripts all arrive "late".
      const behind: OwnershipStore = redisOwnership(
        { ...connection, redisTimeMillis: Effect.map(connection.redisTimeMillis, (t) => t - 10_000) },
        keys,
        "a",
        "token-a"
      )
      const late = yield* Effect.exit(behind.claim("late"))
      assert.isTrue(Exit.isFailure(late))
      assert.isUndefined(yield* a.holder("late"))
    })))

  it("lease: taken, held, another token refused, lost when it lapsed, resigned", () =>
    run(Effect.gen(function*() {
      const { connection, keys } = yield* nodes
      const mine = redisOwnership(connection, keys, "n", "t1")
      const other = redisOwnership(connection, keys, "n", "t2")
      assert.strictEqual(yield* mine.lease(Duration.millis(200)), "lost")
      assert.strictEqual(yield* mine.lease(Duration.millis(200)), "held")
      assert.strictEqual(yield* other.lease(Duration.millis(200)), "taken")
      yield* Effect.sleep("300 millis")
      assert.strictEqual(yield* mine.lease(Duration.seconds(5)), "lost")
      yield* other.resign
      assert.strictEqual(yield* mine.lease(Duration.seconds(5)), "held")
      yield* mine.resign
      assert.strictEqual(yield* other.lease(Duration.seconds(5)), "lost")
    })))
})
