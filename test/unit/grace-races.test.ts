/**
 * Grace races (SPEC §3.3, §3.4), on TestClock: the moments where two guards meet — the grace
 * fiber's interruption when a grace is cancelled or replaced, and the identity token the expiry
 * checks before it acts. Each test names the guard it pins; removing that guard alone makes it fail
 * (checked by hand, see docs/reliability.md "Grace races").
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import type { BinaryHandle } from "../../src/registry/Handles.ts"
import { type GraceTimer, interruptingTimer } from "../../src/registry/GraceTimer.ts"
import { makeRegistry, type RegistryShape } from "../../src/registry/Registry.ts"
import { binaryHandle, count, isolated, phoneHandle, settle } from "../support/Core.ts"
import { type FakeConnection, makeFakeConnection } from "../support/FakeConnection.ts"

const GRACE = Duration.seconds(30)

const makeTestRegistry = Effect.flatMap(
  Effect.scope,
  (scope) => makeRegistry({ gracePeriod: GRACE, maxPhonesPerServer: 16, scope })
)

/** A timer whose cancel does nothing: every armed grace fires, so only the token can stop it. */
const neverCancelled = (scope: Scope.Scope): GraceTimer => ({
  start: (delay, fire) => Effect.as(Effect.forkIn(Effect.andThen(Effect.sleep(delay), fire), scope), () => {})
})

/** The relay's timer, counting graces armed and neither fired nor cancelled yet. */
const counted = (scope: Scope.Scope) => {
  let pending = 0
  const inner = interruptingTimer(scope)
  const timer: GraceTimer = {
    start: (delay, fire) => {
      let done = false
      const finish = () => {
        if (!done) (done = true), pending--
      }
      pending++
      return Effect.map(inner.start(delay, Effect.ensuring(fire, Effect.sync(finish))), (cancel) => () => {
        finish()
        cancel()
      })
    }
  }
  return { timer, pending: () => pending }
}

const newBinary = (serverId: string) =>
  Effect.map(makeFakeConnection(), (conn): { handle: BinaryHandle; conn: FakeConnection } => ({
    handle: binaryHandle(serverId, conn),
    conn
  }))

const phoneOn = (registry: RegistryShape, serverId: string) =>
  Effect.gen(function*() {
    const conn = yield* makeFakeConnection()
    const handle = yield* registry.registerPhone(serverId, phoneHandle(conn))
    return { handle, conn }
  })

const closes = (conn: FakeConnection) => conn.closeCalls.map((c) => c.code)

describe("grace races", () => {
  it.effect("a reclaim in the same tick as the expiry: exactly one of them happens, never both", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry
      const a = yield* newBinary("s")
      yield* registry.claim(a.handle)
      const phone = yield* phoneOn(registry, "s")
      const b = yield* newBinary("s")
      // B's claim is scheduled for the very instant A's grace ends.
      const reclaim = yield* Effect.forkChild(Effect.andThen(Effect.sleep(GRACE), registry.claim(b.handle)))
      yield* registry.release(a.handle)
      yield* TestClock.adjust(GRACE)
      const result = yield* Fiber.join(reclaim)
      yield* settle

      const expiries = yield* count(Metrics.graceExpiries)
      const reclaims = yield* count(Metrics.graceReclaims)
      assert.strictEqual(expiries + reclaims, 1, "one grace ends exactly one way")
      // The phone heard exactly one close: 1000 if the expiry won, 4404 if the reclaim won.
      assert.deepStrictEqual(closes(phone.conn), [expiries === 1 ? 1000 : 4404])
      assert.strictEqual(result._tag, expiries === 1 ? "Claimed" : "Reclaimed")
      // Whichever won, B holds the slot and nothing fires later.
      assert.strictEqual(registry.binaryFor("s"), b.handle)
      yield* TestClock.adjust("5 minutes")
      assert.strictEqual(registry.binaryFor("s"), b.handle)
      assert.strictEqual((yield* count(Metrics.graceExpiries)) + (yield* count(Metrics.graceReclaims)), 1)
    })))

  it.effect("a grace re-armed in the tick its predecessor fires: the stale fire does nothing (the token check alone)", () =>
    // At t = 30 s A's grace fiber wakes. In that same tick, before it runs, a fiber that woke
    // first reclaims (interrupting it) and the new holder disconnects (arming a new grace). The
    // woken fiber can no longer be stopped by interruption; only its token tells it it is stale.
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry
      const a = yield* newBinary("s")
      yield* registry.claim(a.handle)
      const b = yield* newBinary("s")
      const raced = yield* Effect.forkChild(Effect.andThen(
        Effect.sleep(GRACE),
        Effect.andThen(registry.claim(b.handle), registry.release(b.handle))
      ))
      yield* registry.release(a.handle)
      yield* TestClock.adjust(GRACE)
      yield* Fiber.join(raced)
      yield* settle
      const phone = yield* phoneOn(registry, "s")
      // Nothing expired: A's grace was raced by the reclaim, B's grace has 30 s to go.
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      assert.deepStrictEqual(closes(phone.conn), [])
      assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 1 })

      yield* TestClock.adjust("29 seconds")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      assert.deepStrictEqual(closes(phone.conn), [])
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
      assert.deepStrictEqual(closes(phone.conn), [1000])
    })))

  it.effect("a cancelled grace stays cancelled: reclaim at 10 s, the old timer's 30 s passes, nothing fires (interruption or token)", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry
      const a = yield* newBinary("s")
      yield* registry.claim(a.handle)
      yield* registry.release(a.handle)
      yield* TestClock.adjust("10 seconds")
      const b = yield* newBinary("s")
      assert.strictEqual((yield* registry.claim(b.handle))._tag, "Reclaimed")
      const phone = yield* phoneOn(registry, "s")
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      assert.deepStrictEqual(closes(phone.conn), [])
      assert.strictEqual(registry.binaryFor("s"), b.handle)
    })))

  it.effect("a takeover of a slot that entered grace during the probe cancels that grace", () =>
    // A holds; B's claim conflicts and the probe starts; A disconnects meanwhile (grace armed);
    // the probe fails and B takes over. A's grace must die with the takeover, or 30 s later it
    // would remove B's slot and close B's phones.
    isolated(Effect.gen(function*() {
      const registry = yield* makeTestRegistry
      const a = yield* newBinary("s")
      yield* registry.claim(a.handle)
      const old = yield* phoneOn(registry, "s")
      const b = yield* newBinary("s")
      const conflict = yield* registry.claim(b.handle)
      assert.strictEqual(conflict._tag, "Conflict")
      yield* TestClock.adjust("3 seconds") // probing
      yield* registry.release(a.handle) // A's connection ends during the probe
      assert.isUndefined(registry.binaryFor("s"))
      yield* TestClock.adjust("7 seconds") // the probe's 10 s are up: no pong
      assert.strictEqual(yield* registry.takeover(b.handle, a.handle), "TookOver")
      assert.deepStrictEqual(old.conn.closeCalls, [CloseCodes.Reclaimed])
      const fresh = yield* phoneOn(registry, "s")

      yield* TestClock.adjust("1 minute") // long past A's grace
      assert.strictEqual(registry.binaryFor("s"), b.handle)
      assert.strictEqual(registry.phoneFor("s", fresh.handle.connId), fresh.handle)
      assert.deepStrictEqual(closes(fresh.conn), [])
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      assert.strictEqual(yield* count(Metrics.takeovers), 1)
      assert.deepStrictEqual(yield* registry.counts, { binaries: 1, phones: 1 })
    })))
})

describe("the two guards, one at a time", () => {
  it.effect("token check alone: with a timer that never cancels, stale fires after reclaim, re-arm and shutdown do nothing", () =>
    isolated(Effect.gen(function*() {
      const registry = yield* Effect.flatMap(
        Effect.scope,
        (scope) => makeRegistry({ gracePeriod: GRACE, maxPhonesPerServer: 16, scope, graceTimer: neverCancelled(scope) })
      )
      const a = yield* newBinary("s")
      yield* registry.claim(a.handle)
      yield* registry.release(a.handle) // grace 1: fires at 30 s
      yield* TestClock.adjust("10 seconds")
      const b = yield* newBinary("s")
      assert.strictEqual((yield* registry.claim(b.handle))._tag, "Reclaimed")
      const phone = yield* phoneOn(registry, "s")
      yield* registry.release(b.handle) // t = 10: grace 2, fires at 40 s
      yield* TestClock.adjust("5 seconds")
      yield* registry.release(b.handle) // t = 15: grace 3 replaces it, fires at 45 s

      yield* TestClock.adjust("25 seconds") // t = 40: graces 1 and 2 have fired, stale
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
      assert.deepStrictEqual(closes(phone.conn), [])
      assert.deepStrictEqual(yield* registry.counts, { binaries: 0, phones: 1 })

      yield* TestClock.adjust("5 seconds") // t = 45: grace 3 is the slot's
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
      assert.deepStrictEqual(closes(phone.conn), [1000])

      // Shutdown keeps a slot in grace but makes its pending fire stale.
      const c = yield* newBinary("t")
      yield* registry.claim(c.handle)
      const other = yield* phoneOn(registry, "t")
      yield* registry.release(c.handle)
      yield* registry.closeAll(CloseCodes.ShuttingDown)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 1)
      assert.deepStrictEqual(closes(other.conn), [1001])
    })))

  it.effect("interruption: a reclaimed, replaced or shut-down grace leaves no timer running", () =>
    isolated(Effect.gen(function*() {
      const { pending, timer } = yield* Effect.map(Effect.scope, counted)
      const registry = yield* Effect.flatMap(
        Effect.scope,
        (scope) => makeRegistry({ gracePeriod: GRACE, maxPhonesPerServer: 16, scope, graceTimer: timer })
      )
      const a = yield* newBinary("s")
      yield* registry.claim(a.handle)
      yield* registry.release(a.handle)
      assert.strictEqual(pending(), 1)
      yield* registry.release(a.handle) // replaced: the newest wins, the old one stops
      assert.strictEqual(pending(), 1)
      const b = yield* newBinary("s")
      yield* registry.claim(b.handle) // reclaimed
      assert.strictEqual(pending(), 0)
      yield* registry.release(b.handle)
      const c = yield* newBinary("s")
      const conflict = yield* registry.claim(c.handle)
      assert.strictEqual(conflict._tag, "Reclaimed")
      assert.strictEqual(pending(), 0)
      yield* registry.release(c.handle)
      assert.strictEqual(pending(), 1)
      yield* registry.closeAll(CloseCodes.ShuttingDown)
      assert.strictEqual(pending(), 0)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(yield* count(Metrics.graceExpiries), 0)
    })))

  it.effect("interruptingTimer: cancel stops the sleeping fiber, the fire never runs", () =>
    Effect.gen(function*() {
      const scope = yield* Effect.scope
      let fired = 0
      const cancel = yield* interruptingTimer(scope).start(GRACE, Effect.sync(() => fired++))
      yield* TestClock.adjust("10 seconds")
      cancel()
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(fired, 0)
      yield* interruptingTimer(scope).start(GRACE, Effect.sync(() => fired++))
      yield* TestClock.adjust(GRACE)
      assert.strictEqual(fired, 1)
    }))
})
