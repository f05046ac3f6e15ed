/**
 * The cross-node plane (`src/cluster/Plane.ts`) over an in-memory pub/sub with `PUBLISH`'s
 * answer (how many subscribers got it): messages of one turn leave as one batch per destination;
 * a probe is answered through the holder's node; nobody on a node's inbox is "gone" at once when
 * its lease lapsed, and only after the reconnect allowance while it still holds it; drops are
 * counted by reason.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import type { ClusterRedisShape } from "../../src/cluster/ClusterRedis.ts"
import { makePlane, type PlaneHandlers, QUEUE_BYTES } from "../../src/cluster/Plane.ts"
import { decode } from "../../src/cluster/WireReader.ts"
import { RegistryUnavailable } from "../../src/domain/Errors.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import { count, isolated } from "../support/Core.ts"

/** One turn of the event loop: what the plane queued is published. */
const nextTurn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

const makeBus = () => {
  const channels = new Map<string, (payload: Buffer) => void>()
  const published: Array<{ channel: string; payload: Buffer }> = []
  let down = false
  let stuck = false
  const unwritten: Array<() => Buffer> = []
  // Each node's connection starting afresh (a Redis restart): completes the waiting nextGeneration.
  let generationChanged = Deferred.makeUnsafe<void>()
  const freshStart = () => {
    const changed = generationChanged
    generationChanged = Deferred.makeUnsafe<void>()
    Deferred.doneUnsafe(changed, Effect.void)
  }
  const redis = (): ClusterRedisShape => ({
    // As node-redis: the command is queued at once and written (its payload read) at the end of the turn.
    publish: (channel, payload) =>
      Effect.callback<number, RegistryUnavailable>((resume) => {
        if (down) return resume(Effect.fail(new RegistryUnavailable({ reason: "down" })))
        if (stuck) {
          // Not written before its deadline; the client may still write it later.
          unwritten.push(payload)
          return resume(Effect.fail(new RegistryUnavailable({ reason: "timed out" })))
        }
        setImmediate(() => {
          // Copied, as onto a socket: once answered, the plane may write its next batch over the buffer.
          const bytes = Buffer.from(payload())
          published.push({ channel, payload: bytes })
          const listener = channels.get(channel)
          if (listener !== undefined) queueMicrotask(() => listener(bytes))
          resume(Effect.succeed(listener === undefined ? 0 : 1))
        })
      }),
    subscribe: (channel, onMessage) =>
      Effect.andThen(
        Effect.sync(() => channels.set(channel, onMessage)),
        Effect.addFinalizer(() => Effect.sync(() => channels.delete(channel)))
      ),
    isUp: () => true,
    send: () => Effect.die("unused"),
    eval: () => () => Effect.die("unused"),
    redisTimeMillis: Effect.succeed(0),
    generation: () => 0,
    nextGeneration: Effect.suspend(() => Deferred.await(generationChanged)),
    nextSubscriberStart: Effect.never
  })
  return { redis, published, channels, setDown: (d: boolean) => (down = d), setStuck: (s: boolean) => (stuck = s), unwritten, freshStart }
}

const node = (
  bus: ReturnType<typeof makeBus>,
  nodeId: string,
  options: { readonly alive?: boolean; readonly handlers?: PlaneHandlers; readonly leases?: Set<string> } = {}
) =>
  makePlane({
    redis: bus.redis(),
    prefix: "p",
    nodeId,
    handlers: () => options.handlers,
    nodeAlive: (other) => Effect.succeed(options.leases?.has(other) ?? false)
  })

const answering = (alive: boolean): PlaneHandlers => ({
  probeLocal: () => Effect.succeed(alive),
  claimLost: () => Effect.void,
  relay: () => undefined
})

describe("cluster plane", () => {
  it.effect("messages of one turn to one node leave as one batch; a probe is answered through the holder's node", () =>
    isolated(Effect.gen(function*() {
      const bus = makeBus()
      const a = yield* node(bus, "a")
      yield* node(bus, "b", { handlers: answering(true) })
      const probes = yield* Effect.forkChild(Effect.all([
        a.probe("b", "s1", "1", Duration.seconds(10)),
        a.probe("b", "s2", "2", Duration.seconds(10))
      ], { concurrency: "unbounded" }))
      yield* nextTurn
      yield* nextTurn
      yield* nextTurn
      assert.deepStrictEqual(yield* Fiber.join(probes), ["alive", "alive"])
      const toB = bus.published.filter((p) => p.channel === "p:inbox:b")
      assert.strictEqual(toB.length, 1)
      assert.strictEqual(decode(toB[0]!.payload).messages.length, 2)
      assert.strictEqual(yield* count(Metrics.clusterMessages.out), 4)
      assert.strictEqual(yield* count(Metrics.clusterMessages.in), 4)
    })))

  it.effect("a node whose lease lapsed and whose inbox nobody listens on is gone at once", () =>
    isolated(Effect.gen(function*() {
      const bus = makeBus()
      const a = yield* node(bus, "a")
      const probe = yield* Effect.forkChild(a.probe("b", "s", "1", Duration.seconds(10)))
      yield* nextTurn
      yield* nextTurn
      assert.strictEqual(yield* Fiber.join(probe), "gone")
      assert.strictEqual(yield* count(Metrics.clusterFramesDropped.node_gone), 1)
    })))

  it.effect("a node that holds its lease but has nobody on its inbox is asked again, and gone only after the allowance", () =>
    isolated(Effect.gen(function*() {
      const bus = makeBus()
      const a = yield* node(bus, "a", { leases: new Set(["b"]) })
      const probe = yield* Effect.forkChild(a.probe("b", "s", "1", Duration.seconds(10)))
      for (let i = 0; i < 4; i++) {
        yield* nextTurn
        yield* TestClock.adjust("250 millis")
      }
      assert.isUndefined(probe.pollUnsafe())
      // Its inbox is back (a reconnect): the next ask is answered.
      const scope = yield* Scope.make()
      yield* node(bus, "b", { handlers: answering(false) }).pipe(Scope.provide(scope))
      for (let i = 0; i < 3; i++) {
        yield* nextTurn
        yield* TestClock.adjust("250 millis")
      }
      assert.strictEqual(yield* Fiber.join(probe), "dead")
      // And without it, the allowance runs out: gone.
      yield* Scope.close(scope, (yield* Effect.exit(Effect.void)))
      const again = yield* Effect.forkChild(a.probe("b", "s", "1", Duration.seconds(10)))
      for (let i = 0; i < 12; i++) {
        yield* nextTurn
        yield* TestClock.adjust("250 millis")
      }
      assert.strictEqual(yield* Fiber.join(again), "gone")
    })))

  it.effect("right after its own Redis connection started afresh, a node waits for a live node's inbox to come back instead of taking over", () =>
    isolated(Effect.gen(function*() {
      const bus = makeBus()
      const a = yield* node(bus, "a", { leases: new Set(["b"]) })
      yield* nextTurn
      bus.freshStart() // Redis restarted: every inbox subscriber reconnects at its own pace
      yield* nextTurn
      const probe = yield* Effect.forkChild(a.probe("b", "s", "1", Duration.seconds(10)))
      // Past the 2 s allowance, b's inbox is still away: not gone.
      for (let i = 0; i < 16; i++) {
        yield* nextTurn
        yield* TestClock.adjust("250 millis")
      }
      assert.isUndefined(probe.pollUnsafe())
      // b resubscribes after 4 s and answers that its binary is alive: the newcomer must get 4409.
      yield* node(bus, "b", { handlers: answering(true) })
      for (let i = 0; i < 3; i++) {
        yield* nextTurn
        yield* TestClock.adjust("250 millis")
      }
      assert.strictEqual(yield* Fiber.join(probe), "alive")
    })))

  it.effect("once the subscribers had time to settle, nobody on a live node's inbox is gone after the allowance again; with none, the timeout says dead", () =>
    isolated(Effect.gen(function*() {
      const bus = makeBus()
      const a = yield* node(bus, "a", { leases: new Set(["b"]) })
      yield* nextTurn
      bus.freshStart()
      yield* nextTurn
      // Within the settle time and nobody ever answers: the probe's own timeout decides (dead).
      const first = yield* Effect.forkChild(a.probe("b", "s", "1", Duration.seconds(3)))
      for (let i = 0; i < 16; i++) {
        yield* nextTurn
        yield* TestClock.adjust("250 millis")
      }
      assert.strictEqual(yield* Fiber.join(first), "dead")
      yield* TestClock.adjust("7 seconds")
      const later = yield* Effect.forkChild(a.probe("b", "s", "1", Duration.seconds(10)))
      for (let i = 0; i < 12; i++) {
        yield* nextTurn
        yield* TestClock.adjust("250 millis")
      }
      assert.strictEqual(yield* Fiber.join(later), "gone")
    })))

  it.effect("a probe whose answer never came (lost while an inbox reconnected) is sent again each second until answered", () =>
    isolated(Effect.gen(function*() {
      const bus = makeBus()
      const a = yield* node(bus, "a")
      let asked = 0
      yield* node(bus, "b", {
        handlers: {
          // The first probe's answer is lost; the one sent again is answered.
          probeLocal: () => (++asked === 1 ? Effect.never : Effect.succeed(true)),
          claimLost: () => Effect.void,
          relay: () => undefined
        }
      })
      const probe = yield* Effect.forkChild(a.probe("b", "s", "1", Duration.seconds(10)))
      for (let i = 0; i < 6; i++) {
        yield* nextTurn
        yield* TestClock.adjust("250 millis")
      }
      assert.strictEqual(yield* Fiber.join(probe), "alive")
      assert.strictEqual(asked, 2)
    })))

  it.effect("no answer within the timeout is dead; Redis not answering drops the batch, counted", () =>
    isolated(Effect.gen(function*() {
      const bus = makeBus()
      const a = yield* node(bus, "a")
      yield* node(bus, "b") // subscribed, but no handlers yet: answers `alive: false`
      bus.setDown(true)
      const probe = yield* Effect.forkChild(a.probe("b", "s", "1", Duration.seconds(1)))
      yield* nextTurn
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Fiber.join(probe), "dead")
      assert.strictEqual(yield* count(Metrics.clusterFramesDropped.redis_down), 1)
    })))

  it.effect("a destination's queue is bounded by bytes: what does not fit is dropped, counted", () =>
    isolated(Effect.gen(function*() {
      const bus = makeBus()
      const a = yield* node(bus, "a")
      yield* node(bus, "b")
      // ClaimLost records of ~64 KiB server-ids fill the 8 MiB queue after ~128 of them.
      const big = "x".repeat(65_000)
      for (let i = 0; i < 200; i++) a.tellLost("b", big, `${i}`)
      yield* nextTurn
      yield* nextTurn
      const sent = bus.published.filter((p) => p.channel === "p:inbox:b")
      assert.strictEqual(sent.length, 1)
      assert.isAtMost(sent[0]!.payload.length, QUEUE_BYTES)
      const delivered = decode(sent[0]!.payload).messages.length
      assert.strictEqual(delivered + (yield* count(Metrics.clusterFramesDropped.queue_full)), 200)
      assert.isAbove(yield* count(Metrics.clusterFramesDropped.queue_full), 0)
    })))

  const grace = (serverId: string) => ({ _tag: "SlotGrace", serverId, epoch: "1" }) as const
  const sentTo = (bus: ReturnType<typeof makeBus>, nodeId: string) =>
    bus.published.filter((p) => p.channel === `p:inbox:${nodeId}`).map((p) => decode(p.payload).messages.map((m) => (m as { serverId: string }).serverId))

  it.effect("a batch takes what its node is sent until the client writes it; what comes after goes in the next, behind it", () =>
    isolated(Effect.gen(function*() {
      const bus = makeBus()
      const a = yield* node(bus, "a")
      yield* node(bus, "b")
      a.send("b", grace("1"))
      a.send("b", grace("2"))
      // Runs after the client's write of this turn (queued after it).
      setImmediate(() => void a.send("b", grace("3")))
      a.send("b", grace("2b"))
      for (let i = 0; i < 3; i++) yield* nextTurn
      assert.deepStrictEqual(sentTo(bus, "b"), [["1", "2", "2b"], ["3"]])
      assert.strictEqual(yield* count(Metrics.clusterMessages.out), 4)
    })))

  it.effect("while Redis is unreachable a turn's records for a node are counted dropped, each once, and none is sent", () =>
    isolated(Effect.gen(function*() {
      const bus = makeBus()
      const a = yield* node(bus, "a")
      yield* node(bus, "b")
      bus.setDown(true)
      for (const id of ["1", "2", "3"]) assert.isTrue(a.send("b", grace(id)))
      yield* nextTurn
      assert.strictEqual(yield* count(Metrics.clusterFramesDropped.redis_down), 3)
      bus.setDown(false)
      a.send("b", grace("4"))
      yield* nextTurn
      yield* nextTurn
      assert.deepStrictEqual(sentTo(bus, "b"), [["4"]])
      assert.strictEqual(yield* count(Metrics.clusterFramesDropped.redis_down), 3)
    })))

  it.effect("a batch given up at its deadline is counted dropped, and sends nothing if the client writes it after all", () =>
    isolated(Effect.gen(function*() {
      const bus = makeBus()
      const a = yield* node(bus, "a")
      yield* node(bus, "b")
      bus.setStuck(true)
      a.send("b", grace("1"))
      a.send("b", grace("2"))
      yield* nextTurn
      assert.strictEqual(yield* count(Metrics.clusterFramesDropped.redis_down), 2)
      bus.setStuck(false)
      assert.strictEqual(bus.unwritten.length, 1)
      assert.strictEqual(bus.unwritten[0]!().length, 0)
      a.send("b", grace("3"))
      yield* nextTurn
      yield* nextTurn
      assert.deepStrictEqual(sentTo(bus, "b"), [["3"]])
    })))
})
