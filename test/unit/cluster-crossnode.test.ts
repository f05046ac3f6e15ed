/**
 * Phones on another node than their binary's (CLUSTER.md §2.2–2.7), over the in-memory plane and
 * store: the binary's node routes to them as to its own, frames keep their envelope byte for
 * byte, the binary hears the close notice of a phone elsewhere, the end of a claim reaches phones
 * on every node — and every record of another claim than the receiver's is dropped (`stale_epoch`).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { type ClusterRegistryShape, makeClusterRegistry } from "../../src/cluster/ClusterRegistry.ts"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import { closeNotice, envelopePrefix, wrap } from "../../src/domain/Envelope.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import { type BufferLedger, makeBufferLedger } from "../../src/connection/BufferLedger.ts"
import { binaryHandle, count, isolated, phoneHandle, settle } from "../support/Core.ts"
import { makeFakeConnection } from "../support/FakeConnection.ts"
import { makeMemoryRedis, type MemoryRedis, memoryOwnership } from "../support/MemoryOwnership.ts"
import { makeMemoryPlanes, type MemoryPlanes } from "../support/MemoryPlane.ts"

const node = (redis: MemoryRedis, nodeId: string, planes: MemoryPlanes, ledger?: BufferLedger) =>
  Effect.gen(function*() {
    let registry: ClusterRegistryShape | undefined
    const plane = planes.planeFor(nodeId, () => registry?.planeHandlers)
    registry = yield* makeClusterRegistry({
      gracePeriod: Duration.seconds(30),
      maxPhonesPerServer: 3,
      scope: yield* Effect.scope,
      store: memoryOwnership(redis, nodeId),
      plane,
      probeTimeout: Duration.seconds(10),
      ...(ledger === undefined ? {} : { ledger })
    })
    return registry
  })

/** Binary on `b`, one phone on `a`, the join delivered. */
const pair = Effect.gen(function*() {
  const redis = makeMemoryRedis()
  const planes = makeMemoryPlanes()
  const a = yield* node(redis, "a", planes)
  const b = yield* node(redis, "b", planes)
  const binaryConn = yield* makeFakeConnection()
  const binary = binaryHandle("s", binaryConn)
  assert.strictEqual((yield* b.claim(binary))._tag, "Claimed")
  const phoneConn = yield* makeFakeConnection()
  const phone = yield* a.registerPhone("s", phoneHandle(phoneConn))
  yield* planes.deliver
  return { redis, planes, a, b, binary, binaryConn, phone, phoneConn, epoch: redis.slots.get("s")!.epoch }
})

describe("cluster: phones on another node than their binary's", () => {
  it.effect("the binary's node routes to a phone elsewhere; frames cross both ways byte-exactly, counted once by the writer", () =>
    isolated(Effect.gen(function*() {
      const { a, b, binaryConn, phone, phoneConn, planes } = yield* pair
      assert.strictEqual(a.binaryFor("s"), phone.servedBy)
      // Phone → binary: the envelope as the phone's node wrapped it (SPEC §2.1).
      const message = Buffer.from(`{"n": 1.50e+2, "s":"\\u00e9"}`)
      assert.isTrue(phone.servedBy.remote!.relay(phone.connId, [wrap(envelopePrefix(phone.connId), message)]))
      yield* planes.deliver
      yield* settle
      assert.deepStrictEqual(binaryConn.sent, [`{"conn_id":"${phone.connId}","frame":${message.toString()}}`])
      assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 1)
      // Binary → phone: b routes to a stand-in; a's outbox writes it and counts it.
      const proxy = b.phoneFor("s", phone.connId)!
      assert.notStrictEqual(proxy, phone)
      assert.strictEqual(proxy.outbox.offer(Buffer.from(`[1,"x"]`), 0)._tag, "Accepted")
      yield* planes.deliver
      yield* settle
      assert.deepStrictEqual(phoneConn.sent, [`[1,"x"]`])
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 1)
    })))

  it.effect("a close directive crosses after the frames before it; the phone's leaving then owes the binary no notice", () =>
    isolated(Effect.gen(function*() {
      const { a, b, binaryConn, phone, phoneConn, planes } = yield* pair
      const proxy = b.phoneFor("s", phone.connId)!
      proxy.outbox.offer(Buffer.from(`"last"`), 0)
      proxy.outbox.offer(undefined, 4000)
      proxy.closedByBinary = true
      assert.strictEqual(proxy.outbox.offer(Buffer.from(`"after"`), 0)._tag, "Refused")
      yield* planes.deliver
      yield* settle
      assert.deepStrictEqual(phoneConn.sent, [`"last"`])
      assert.strictEqual(phoneConn.closedWith()?.code, 4000)
      assert.isTrue(phone.closedByBinary)
      yield* a.unregisterPhone(phone)
      yield* planes.deliver
      assert.deepStrictEqual(binaryConn.sent, [])
      assert.isUndefined(b.phoneFor("s", phone.connId))
    })))

  it.effect("a phone elsewhere that leaves on its own: its binary gets the close notice, after its frames", () =>
    isolated(Effect.gen(function*() {
      const { a, b, binaryConn, phone, planes } = yield* pair
      phone.servedBy.remote!.relay(phone.connId, [wrap(envelopePrefix(phone.connId), Buffer.from("1"))])
      phone.servedBy.remote!.closeNotice(phone.connId, 4001)
      yield* a.unregisterPhone(phone)
      yield* planes.deliver
      assert.deepStrictEqual(binaryConn.sent, [`{"conn_id":"${phone.connId}","frame":1}`, closeNotice(phone.connId, 4001)])
      assert.isUndefined(b.phoneFor("s", phone.connId))
    })))

  it.effect("records of another claim are dropped (stale_epoch) both ways: no frame reaches a binary that did not serve its phone", () =>
    isolated(Effect.gen(function*() {
      const { a, b, binaryConn, phone, phoneConn, planes, epoch } = yield* pair
      const stale = `${epoch}0`
      const relay = (registry: ClusterRegistryShape, message: Parameters<ClusterRegistryShape["planeHandlers"]["relay"]>[0][number]) =>
        registry.planeHandlers.relay([message]) ?? Effect.void
      yield* relay(b, { _tag: "ToBinary", serverId: "s", epoch: stale, connId: phone.connId, node: "a", envelopes: [Buffer.from("{}")] })
      yield* relay(a, { _tag: "ToPhone", serverId: "s", epoch: stale, connId: phone.connId, frame: Buffer.from("2"), closeCode: 0 })
      yield* relay(a, { _tag: "SlotEnded", serverId: "s", epoch: stale, how: "reclaimed" })
      yield* settle
      assert.deepStrictEqual(binaryConn.sent, [])
      assert.deepStrictEqual(phoneConn.sent, [])
      assert.isUndefined(phoneConn.closedWith())
      assert.strictEqual(yield* count(Metrics.clusterFramesDropped.stale_epoch), 3)
      assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 0)
      yield* planes.deliver
    })))

  it.effect("a reclaim on a third node closes the phone elsewhere 4404; a later phone there hears only the new binary", () =>
    isolated(Effect.gen(function*() {
      const { redis, planes, a, b, binary, phone, phoneConn, epoch } = yield* pair
      const c = yield* node(redis, "c", planes)
      yield* b.release(binary)
      yield* planes.deliver
      assert.isUndefined(a.binaryFor("s"), "in grace: the phone elsewhere stops sending")
      const returned = binaryHandle("s", yield* makeFakeConnection())
      assert.strictEqual((yield* c.claim(returned))._tag, "Reclaimed")
      yield* planes.deliver
      yield* settle
      assert.deepStrictEqual(phoneConn.closedWith(), CloseCodes.Reclaimed)
      assert.strictEqual(yield* count(Metrics.graceReclaims), 1)
      // The old claim's records arriving late at a are dropped.
      const fresh = yield* a.registerPhone("s", phoneHandle(yield* makeFakeConnection()))
      yield* planes.deliver
      yield* a.planeHandlers.relay([{ _tag: "ToPhone", serverId: "s", epoch, connId: fresh.connId, frame: Buffer.from("0"), closeCode: 0 }]) ??
        Effect.void
      assert.deepStrictEqual((fresh.conn as unknown as { sent: Array<string> }).sent, [])
      assert.isDefined(c.phoneFor("s", fresh.connId))
      void phone
    })))

  it.effect("grace expiry on the binary's node closes phones elsewhere 1000, counted once (there)", () =>
    isolated(Effect.gen(function*() {
      const { planes, a, b, binary, phoneConn } = yield* pair
      yield* b.release(binary)
      yield* planes.deliver
      const { TestClock } = yield* Effect.promise(() => import("effect/testing"))
      yield* TestClock.adjust(Duration.seconds(31))
      yield* settle
      yield* planes.deliver
      yield* settle
      assert.deepStrictEqual(phoneConn.closedWith(), CloseCodes.Normal)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
      assert.strictEqual((yield* a.counts).phones, 0)
    })))

  it.effect("the binary's buffer full: the phone elsewhere is closed 1011 binary backlog full, its later frames dropped", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const planes = makeMemoryPlanes()
      const a = yield* node(redis, "a", planes)
      const b = yield* node(redis, "b", planes)
      const binaryConn = yield* makeFakeConnection({ writes: "stall" })
      assert.strictEqual((yield* b.claim(binaryHandle("s", binaryConn)))._tag, "Claimed")
      const phoneConn = yield* makeFakeConnection()
      const phone = yield* a.registerPhone("s", phoneHandle(phoneConn))
      yield* planes.deliver
      const big = Buffer.alloc(1024 * 1024, 0x31)
      for (let i = 0; i < 6; i++) phone.servedBy.remote!.relay(phone.connId, [wrap(phone.envelopePrefix, big)])
      yield* planes.deliver
      yield* settle
      yield* planes.deliver
      yield* settle
      assert.deepStrictEqual(phoneConn.closedWith(), CloseCodes.BinaryBacklogFull)
      assert.isAbove(yield* count(Metrics.framesDropped.binary_write_failed), 0)
    })))

  it.effect("the backstop, when the word is lost: another claim in Redis → 4404 at the next check; grace → frames stop; no claim for 3 s → 1000", () =>
    isolated(Effect.gen(function*() {
      const { redis, a, phoneConn } = yield* pair
      const { TestClock } = yield* Effect.promise(() => import("effect/testing"))
      redis.slots.get("s")!.state = "grace"
      yield* a.checkRemote
      assert.isUndefined(a.binaryFor("s"))
      assert.isUndefined(phoneConn.closedWith())
      // The claim disappears (its expiry's word lost): not at once — a holder re-asserts after an empty restart.
      const kept = redis.slots.get("s")!
      redis.slots.delete("s")
      yield* a.checkRemote
      yield* TestClock.adjust(Duration.seconds(2))
      yield* a.checkRemote
      assert.isUndefined(phoneConn.closedWith())
      yield* TestClock.adjust(Duration.seconds(1))
      yield* a.checkRemote
      yield* settle
      assert.deepStrictEqual(phoneConn.closedWith(), CloseCodes.Normal)
      assert.strictEqual((yield* a.counts).phones, 0)
      // Another claim: 4404 at the next check.
      redis.slots.set("s", kept)
      const other = yield* makeFakeConnection()
      yield* a.registerPhone("s", phoneHandle(other))
      redis.slots.set("s", { ...kept, epoch: `${kept.epoch}9` })
      yield* a.checkRemote
      yield* settle
      assert.deepStrictEqual(other.closedWith(), CloseCodes.Reclaimed)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
    })))

  it.effect("a takeover on the binary's own node closes its phones elsewhere 4404; their records of the old claim are then stale there", () =>
    isolated(Effect.gen(function*() {
      const { a, b, binary, phone, phoneConn, planes } = yield* pair
      const newcomer = binaryHandle("s", yield* makeFakeConnection())
      const claim = yield* b.claim(newcomer)
      assert.strictEqual(claim._tag, "Conflict")
      assert.strictEqual(yield* b.takeover(newcomer, binary), "TookOver")
      yield* planes.deliver
      yield* settle
      assert.deepStrictEqual(phoneConn.closedWith(), CloseCodes.Reclaimed)
      assert.isUndefined(b.phoneFor("s", phone.connId))
      assert.isUndefined(a.phoneFor("s", phone.connId))
      assert.strictEqual(yield* count(Metrics.takeovers), 1)
    })))

  it.effect("a dead node's phones leave the claims of other nodes: the binary gets their close notice (1001), the cap frees their places", () =>
    isolated(Effect.gen(function*() {
      const { redis, b, binaryConn, phone, planes } = yield* pair
      redis.leases.set("a", "a-token")
      yield* b.reapRemotePhones
      assert.isDefined(b.phoneFor("s", phone.connId), "a holds its lease: nothing happens")
      assert.strictEqual(redis.phones.get("s")?.get(phone.connId), "a")
      redis.leases.delete("a")
      yield* b.reapRemotePhones
      assert.isUndefined(b.phoneFor("s", phone.connId))
      assert.deepStrictEqual(binaryConn.sent, [closeNotice(phone.connId, 1001)])
      assert.isUndefined(redis.phones.get("s")?.get(phone.connId))
      yield* planes.deliver
    })))

  it.effect("frames from another node count in the relay-wide buffer bound (SPEC §7.4): over it, the phone elsewhere is closed 1011 binary backlog full", () =>
    isolated(Effect.gen(function*() {
      const redis = makeMemoryRedis()
      const planes = makeMemoryPlanes()
      const ledger = makeBufferLedger(1_000)
      const a = yield* node(redis, "a", planes)
      const b = yield* node(redis, "b", planes, ledger)
      const binaryConn = yield* makeFakeConnection({ writes: "stall", ledger })
      assert.strictEqual((yield* b.claim(binaryHandle("s", binaryConn)))._tag, "Claimed")
      const phoneConn = yield* makeFakeConnection()
      const phone = yield* a.registerPhone("s", phoneHandle(phoneConn))
      yield* planes.deliver
      phone.servedBy.remote!.relay(phone.connId, [wrap(phone.envelopePrefix, Buffer.alloc(2_000, 0x31))])
      yield* planes.deliver
      yield* settle
      yield* planes.deliver
      yield* settle
      assert.deepStrictEqual(binaryConn.sent, [])
      assert.deepStrictEqual(phoneConn.closedWith(), CloseCodes.BinaryBacklogFull)
    })))
})
