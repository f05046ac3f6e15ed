/**
 * Registry transitions (SPEC §3): grace, reclaim, expiry, the stale-fire guard, takeover and
 * phone registration, driven by TestClock with in-memory connections.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { TestClock } from "effect/testing"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import type { BinaryHandle, PhoneHandle } from "../../src/registry/Handles.ts"
import { makeRegistry, type RegistryShape } from "../../src/registry/Registry.ts"
import { binaryHandle, count, gaugeValue, isolated, phoneHandle } from "../support/Core.ts"
import { type FakeConnection, makeFakeConnection } from "../support/FakeConnection.ts"

const GRACE = Duration.seconds(30)
const CAP = 3

const makeTestRegistry = (maxPhonesPerServer = CAP) =>
  Effect.flatMap(Effect.scope, (scope) => makeRegistry({ gracePeriod: GRACE, maxPhonesPerServer, scope }))

interface Binary {
  readonly handle: BinaryHandle
  readonly conn: FakeConnection
}

interface Phone {
  readonly handle: PhoneHandle
  readonly conn: FakeConnection
}

const newBinary = (serverId: string) =>
  Effect.map(makeFakeConnection(), (conn): Binary => ({ handle: binaryHandle(serverId, conn), conn }))

const claimed = (registry: RegistryShape, serverId: string, expected: "Claimed" | "Reclaimed" = "Claimed") =>
  Effect.gen(function*() {
    const binary = yield* newBinary(serverId)
    const result = yield* registry.claim(binary.handle)
    assert.strictEqual(result._tag, expected)
    return binary
  })

const registered = (registry: RegistryShape, serverId: string) =>
  Effect.gen(function*() {
    const conn = yield* makeFakeConnection()
    const handle = yield* registry.registerPhone(serverId, phoneHandle(conn))
    return { handle, conn } satisfies Phone
  })

const untouched = (phone: Phone) => {
  assert.strictEqual(phone.conn.closeCalls.length, 0)
  assert.isTrue(phone.conn.isOpen())
}

const closedOnceWith = (conn: FakeConnection, close: CloseCodes.CloseCode) => {
  assert.deepStrictEqual(conn.closeCalls, [close])
}

describe("grace", () => {
  it.effect("expires at 30 s and not at 29 s: the slot is gone, its phones closed 1000, one expiry counted", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      const p1 = yield* registered(registry, "s")
      const p2 = yield* registered(registry, "s")
      yield* registry.release(a.handle)

      yield* TestClock.adjust("29 seconds")
      untouched(p1)
      untouched(p2)
      assert.strictEqual(registry.phoneFor("s", p1.handle.connId), p1.handle)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 2 })

      yield* TestClock.adjust("1 second")
      closedOnceWith(p1.conn, CloseCodes.Normal)
      closedOnceWith(p2.conn, CloseCodes.Normal)
      assert.strictEqual(p1.conn.closedWith()?.reason, "")
      assert.isUndefined(registry.phoneFor("s", p1.handle.connId))
      assert.isUndefined(registry.phoneFor("s", p2.handle.connId))
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 0 })
      assert.strictEqual(yield* gaugeValue(Metrics.connectedPhones), 0)
      // The binary entry went with the slot: phones are refused, the next binary simply claims.
      const late = yield* Effect.exit(registered(registry, "s"))
      assert.isTrue(Exit.isFailure(late))
      yield* claimed(registry, "s", "Claimed")

      yield* TestClock.adjust("5 minutes")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
    })))

  it.effect("a binary in grace is not live: binaryFor misses, counts and the gauge exclude it", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "a")
      const b = yield* claimed(registry, "b")
      yield* registered(registry, "a")
      yield* registered(registry, "b")
      assert.deepStrictEqual(yield* registry.counts, { binaries: 2, phones: 2 })
      assert.strictEqual(yield* gaugeValue(Metrics.connectedBinaries), 2)

      yield* registry.release(a.handle)
      assert.isUndefined(registry.binaryFor("a"))
      assert.isFalse(registry.isLiveHolder(a.handle))
      assert.strictEqual(registry.binaryFor("b"), b.handle)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 2 })
      assert.strictEqual(yield* gaugeValue(Metrics.connectedBinaries), 1)
      assert.strictEqual(yield* gaugeValue(Metrics.connectedPhones), 2)

      yield* claimed(registry, "a", "Reclaimed")
      assert.deepStrictEqual(yield* registry.counts, { binaries: 2, phones: 1 })
      assert.strictEqual(yield* gaugeValue(Metrics.connectedBinaries), 2)
      assert.strictEqual(yield* gaugeValue(Metrics.connectedPhones), 1)
    })))

  it.effect("a phone can register during grace, and grace expiry closes it 1000", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      yield* registry.release(a.handle)
      yield* TestClock.adjust("10 seconds")
      const late = yield* registered(registry, "s")
      assert.strictEqual(late.handle.servedBy, a.handle)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 1 })

      yield* TestClock.adjust("19 seconds")
      untouched(late)
      yield* TestClock.adjust("1 second")
      closedOnceWith(late.conn, CloseCodes.Normal)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
    })))

  it.effect("scheduling a grace for a slot in grace replaces it: only the newest fires, and it counts once", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      const phone = yield* registered(registry, "s")
      yield* registry.release(a.handle)
      yield* TestClock.adjust("10 seconds")
      yield* registry.release(a.handle)
      // Still one binary in grace, not two.
      assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 1 })

      yield* TestClock.adjust("25 seconds") // t = 35 s: the first grace's time has passed
      untouched(phone)
      assert.strictEqual(registry.phoneFor("s", phone.handle.connId), phone.handle)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)

      yield* TestClock.adjust("5 seconds") // t = 40 s: the newest grace fires
      closedOnceWith(phone.conn, CloseCodes.Normal)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 0 })
    })))
})

describe("reclaim", () => {
  it.effect("reclaim at 10 s evicts the phones 4404 and the old grace's later fire changes nothing", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      const old1 = yield* registered(registry, "s")
      const old2 = yield* registered(registry, "s")
      yield* registry.release(a.handle)
      yield* TestClock.adjust("10 seconds")

      const b = yield* claimed(registry, "s", "Reclaimed")
      closedOnceWith(old1.conn, CloseCodes.Reclaimed)
      closedOnceWith(old2.conn, CloseCodes.Reclaimed)
      assert.strictEqual(old1.conn.closedWith()?.reason, "binary reclaimed server-id")
      assert.isUndefined(registry.phoneFor("s", old1.handle.connId))
      assert.isUndefined(registry.phoneFor("s", old2.handle.connId))
      assert.strictEqual(registry.binaryFor("s"), b.handle)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 0 })
      assert.strictEqual(yield* count(Metrics.graceReclaims), 1)

      const fresh = yield* registered(registry, "s")
      assert.strictEqual(fresh.handle.servedBy, b.handle)
      yield* TestClock.adjust("20 seconds") // t = 30 s: the old grace would have fired
      yield* TestClock.adjust("5 minutes")
      untouched(fresh)
      assert.strictEqual(registry.phoneFor("s", fresh.handle.connId), fresh.handle)
      assert.strictEqual(registry.binaryFor("s"), b.handle)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 1 })
      assert.strictEqual(b.conn.closeCalls.length, 0)
    })))

  it.effect("claim, release, reclaim by B, release B: only B's grace can fire", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      yield* registry.release(a.handle) // A's grace would fire at 30 s
      yield* TestClock.adjust("10 seconds")
      const b = yield* claimed(registry, "s", "Reclaimed")
      yield* TestClock.adjust("5 seconds")
      yield* registry.release(b.handle) // B's grace fires at 45 s
      const phone = yield* registered(registry, "s")
      assert.strictEqual(phone.handle.servedBy, b.handle)

      yield* TestClock.adjust("15 seconds") // t = 30 s
      untouched(phone)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      yield* TestClock.adjust("14 seconds") // t = 44 s
      untouched(phone)
      assert.strictEqual(registry.phoneFor("s", phone.handle.connId), phone.handle)

      yield* TestClock.adjust("1 second") // t = 45 s
      closedOnceWith(phone.conn, CloseCodes.Normal)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
      yield* TestClock.adjust("5 minutes")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
    })))

  it.effect("a phone registered during grace is evicted 4404 by the reclaim", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      yield* registry.release(a.handle)
      const late = yield* registered(registry, "s")
      yield* claimed(registry, "s", "Reclaimed")
      closedOnceWith(late.conn, CloseCodes.Reclaimed)
      assert.isUndefined(registry.phoneFor("s", late.handle.connId))
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 0 })
    })))

  it.effect("a displaced binary (reclaimed) cannot arm a grace", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      yield* registry.release(a.handle)
      const b = yield* claimed(registry, "s", "Reclaimed")
      const phone = yield* registered(registry, "s")

      yield* registry.release(a.handle) // A's handler ends late
      assert.strictEqual(registry.binaryFor("s"), b.handle)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 1 })
      yield* TestClock.adjust("5 minutes")
      untouched(phone)
      assert.strictEqual(registry.binaryFor("s"), b.handle)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
    })))
})

describe("takeover", () => {
  it.effect("takeover installs the newcomer, evicts the phones 4404 and closes the incumbent 1011 heartbeat timeout", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      const phone = yield* registered(registry, "s")
      const b = yield* newBinary("s")
      const conflict = yield* registry.claim(b.handle)
      assert.deepStrictEqual(conflict, { _tag: "Conflict", incumbent: a.handle })
      // A conflict answer changes nothing until the probe decided.
      assert.strictEqual(registry.binaryFor("s"), a.handle)
      untouched(phone)

      assert.strictEqual(yield* registry.takeover(b.handle, a.handle), "TookOver")
      assert.strictEqual(registry.binaryFor("s"), b.handle)
      closedOnceWith(phone.conn, CloseCodes.Reclaimed)
      closedOnceWith(a.conn, CloseCodes.HeartbeatTimeout)
      assert.strictEqual(a.conn.closedWith()?.reason, "heartbeat timeout")
      assert.strictEqual(b.conn.closeCalls.length, 0)
      assert.strictEqual(yield* count(Metrics.takeovers), 1)
      assert.strictEqual(yield* count(Metrics.graceReclaims), 0)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 0 })
    })))

  it.effect("two newcomers for one dead incumbent: exactly one takeover wins", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      const b = yield* newBinary("s")
      const c = yield* newBinary("s")
      assert.strictEqual((yield* registry.claim(b.handle))._tag, "Conflict")
      assert.strictEqual((yield* registry.claim(c.handle))._tag, "Conflict")

      const [wonB, wonC] = yield* Effect.all([
        registry.takeover(b.handle, a.handle),
        registry.takeover(c.handle, a.handle)
      ], { concurrency: "unbounded" })
      assert.deepStrictEqual([wonB, wonC].sort(), ["Superseded", "TookOver"])
      assert.strictEqual(registry.binaryFor("s"), wonB === "TookOver" ? b.handle : c.handle)
      closedOnceWith(a.conn, CloseCodes.HeartbeatTimeout)
      assert.strictEqual(yield* count(Metrics.takeovers), 1)
    })))

  it.effect("a binary displaced by a takeover cannot arm a grace", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      const b = yield* newBinary("s")
      yield* registry.claim(b.handle)
      assert.strictEqual(yield* registry.takeover(b.handle, a.handle), "TookOver")
      const phone = yield* registered(registry, "s")

      yield* registry.release(a.handle)
      assert.strictEqual(registry.binaryFor("s"), b.handle)
      assert.isTrue(registry.isLiveHolder(b.handle))
      yield* TestClock.adjust("5 minutes")
      untouched(phone)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 1 })
    })))

  it.effect("a takeover for an incumbent that was already replaced is Superseded and changes nothing", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      const b = yield* newBinary("s")
      yield* registry.claim(b.handle)
      yield* registry.release(a.handle)
      const c = yield* claimed(registry, "s", "Reclaimed") // C reclaimed while B was probing
      const phone = yield* registered(registry, "s")

      assert.strictEqual(yield* registry.takeover(b.handle, a.handle), "Superseded")
      assert.strictEqual(registry.binaryFor("s"), c.handle)
      untouched(phone)
      assert.strictEqual(c.conn.closeCalls.length, 0)
      assert.strictEqual(yield* count(Metrics.takeovers), 0)
    })))
  it.effect("a newcomer whose socket is gone cannot take over: the incumbent and its phones are untouched, nothing counted", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      const phone = yield* registered(registry, "s")
      const b = yield* newBinary("s")
      assert.strictEqual((yield* registry.claim(b.handle))._tag, "Conflict")
      b.conn.peerClose(1006) // left while the incumbent was probed

      assert.strictEqual(yield* registry.takeover(b.handle, a.handle), "Gone")
      assert.strictEqual(registry.binaryFor("s"), a.handle)
      untouched(phone)
      assert.strictEqual(a.conn.closeCalls.length, 0)
      assert.strictEqual(yield* count(Metrics.takeovers), 0)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 1 })
      // A gone newcomer's release arms nothing: it never held the slot.
      yield* registry.release(b.handle)
      assert.isTrue(registry.isLiveHolder(a.handle))
    })))
})

describe("a binary whose socket is gone", () => {
  it.effect("cannot claim an empty slot nor reclaim one in grace: the grace and its phones stay", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      const phone = yield* registered(registry, "s")
      yield* registry.release(a.handle)
      const gone = yield* newBinary("s")
      gone.conn.peerClose(1006)

      assert.deepStrictEqual(yield* registry.claim(gone.handle), { _tag: "Gone" })
      untouched(phone)
      assert.strictEqual(yield* count(Metrics.graceReclaims), 0)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 1 })
      yield* TestClock.adjust("30 seconds")
      closedOnceWith(phone.conn, CloseCodes.Normal)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)

      const late = yield* newBinary("t")
      late.conn.peerClose(1006)
      assert.deepStrictEqual(yield* registry.claim(late.handle), { _tag: "Gone" })
      assert.isUndefined(registry.binaryFor("t"))
      assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 0 })
    })))
})

describe("phones", () => {
  it.effect("registerPhone fails NoServer when no binary holds the server-id", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      yield* claimed(registry, "other")
      const conn = yield* makeFakeConnection()
      const error = yield* Effect.flip(registry.registerPhone("s", phoneHandle(conn)))
      assert.strictEqual(error._tag, "NoServer")
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 0 })
    })))

  it.effect("registerPhone fails PhonesAtCap at the cap, and a freed place can be taken again", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      yield* claimed(registry, "s")
      const phones: Array<Phone> = []
      for (let i = 0; i < CAP; i++) phones.push(yield* registered(registry, "s"))
      const conn = yield* makeFakeConnection()
      const error = yield* Effect.flip(registry.registerPhone("s", phoneHandle(conn)))
      assert.strictEqual(error._tag, "PhonesAtCap")
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: CAP })

      yield* registry.unregisterPhone(phones[0]!.handle)
      const again = yield* registered(registry, "s")
      assert.strictEqual(registry.phoneFor("s", again.handle.connId), again.handle)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: CAP })
    })))

  it.effect("NoServer is checked before the cap", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry(0)
      yield* claimed(registry, "held")
      const conn = yield* makeFakeConnection()
      assert.strictEqual((yield* Effect.flip(registry.registerPhone("missing", phoneHandle(conn))))._tag, "NoServer")
      assert.strictEqual((yield* Effect.flip(registry.registerPhone("held", phoneHandle(conn))))._tag, "PhonesAtCap")
    })))

  it.effect("conn_ids are issued per phone and never repeat", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry(64)
      yield* claimed(registry, "s")
      const ids = new Set<string>()
      for (let i = 0; i < 64; i++) {
        const phone = yield* registered(registry, "s")
        assert.match(phone.handle.connId, /^client-s-[0-9a-f]{8}$/)
        ids.add(phone.handle.connId)
      }
      assert.strictEqual(ids.size, 64)
    })))

  it.effect("unregister is identity-checked and a repeat is a no-op", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      yield* claimed(registry, "s")
      const phone = yield* registered(registry, "s")
      const impostor: PhoneHandle = { ...phone.handle }

      yield* registry.unregisterPhone(impostor)
      assert.strictEqual(registry.phoneFor("s", phone.handle.connId), phone.handle)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 1 })

      yield* registry.unregisterPhone(phone.handle)
      yield* registry.unregisterPhone(phone.handle)
      assert.isUndefined(registry.phoneFor("s", phone.handle.connId))
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 0 })
      assert.strictEqual(yield* gaugeValue(Metrics.connectedPhones), 0)
    })))

  it.effect("a phone evicted by a reclaim unregistering later does not disturb the counts", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "s")
      const old = yield* registered(registry, "s")
      yield* registry.release(a.handle)
      yield* claimed(registry, "s", "Reclaimed")
      const fresh = yield* registered(registry, "s")

      yield* registry.unregisterPhone(old.handle)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 1 })
      assert.strictEqual(registry.phoneFor("s", fresh.handle.connId), fresh.handle)
    })))

  it.effect("a phone is found only under its own server-id", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      yield* claimed(registry, "a")
      yield* claimed(registry, "b")
      const phone = yield* registered(registry, "a")
      assert.strictEqual(registry.phoneFor("a", phone.handle.connId), phone.handle)
      assert.isUndefined(registry.phoneFor("b", phone.handle.connId))
    })))
})

describe("shutdown", () => {
  it.effect("closeAll closes every binary and phone, including a slot in grace, and no grace fires afterwards", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "a")
      const graced = yield* registered(registry, "a")
      yield* registry.release(a.handle)
      const b = yield* claimed(registry, "b")
      const live = yield* registered(registry, "b")

      yield* registry.closeAll(CloseCodes.ShuttingDown)
      closedOnceWith(graced.conn, CloseCodes.ShuttingDown)
      closedOnceWith(live.conn, CloseCodes.ShuttingDown)
      closedOnceWith(b.conn, CloseCodes.ShuttingDown)
      assert.strictEqual(live.conn.closedWith()?.reason, "shutting down")

      yield* TestClock.adjust("5 minutes")
      closedOnceWith(graced.conn, CloseCodes.ShuttingDown)
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
    })))

  it.effect("after closeAll a slot that was in grace still does not count as a connected binary", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry()
      const a = yield* claimed(registry, "a")
      yield* registry.release(a.handle)
      const b = yield* claimed(registry, "b")
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 0 })

      yield* registry.closeAll(CloseCodes.ShuttingDown)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 0 })
      assert.isUndefined(registry.binaryFor("a"))
      yield* registry.release(b.handle) // b's handler ends once its socket closed
      assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 0 })
      assert.strictEqual(yield* gaugeValue(Metrics.connectedBinaries), 0)
    })))
})
