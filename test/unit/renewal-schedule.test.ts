/**
 * Certificate order timing on `TestClock` (EDGE.md §1): an order at once without a certificate,
 * renewal when a third of the lifetime remains (day 60 of 90), checks at most 12 h apart, failed
 * orders retried after 1, 2, 4 … minutes up to 1 h, the backoff reset by a success.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { TestClock } from "effect/testing"
import {
  isDue,
  nextCheck,
  renewalLoop,
  renewalTime,
  retryDelay,
  type Validity
} from "../../src/edge/RenewalSchedule.ts"

const DAY = 86_400_000
const MINUTE = 60_000

describe("pure timing", () => {
  it("a 90-day certificate is due on day 60 (30 days left), not a millisecond before", () => {
    const cert = { notBefore: 0, notAfter: 90 * DAY }
    assert.strictEqual(renewalTime(cert), 60 * DAY)
    assert.isFalse(isDue(cert, 60 * DAY - 1))
    assert.isTrue(isDue(cert, 60 * DAY))
  })

  it("a 6-day certificate is due after 4 days", () => {
    assert.strictEqual(renewalTime({ notBefore: 10 * DAY, notAfter: 16 * DAY }), 14 * DAY)
  })

  it("retries: 1, 2, 4, 8, 16, 32 min, then 1 h for ever", () => {
    const minutes = [1, 2, 3, 4, 5, 6, 7, 8, 20].map((n) => Duration.toMillis(retryDelay(n)) / MINUTE)
    assert.deepStrictEqual(minutes, [1, 2, 4, 8, 16, 32, 60, 60, 60])
  })

  it("the next check is the renewal time or 12 h, whichever comes first", () => {
    const cert = { notBefore: 0, notAfter: 90 * DAY }
    assert.strictEqual(Duration.toMillis(nextCheck(cert, 0)), 12 * 3_600_000)
    assert.strictEqual(Duration.toMillis(nextCheck(cert, 60 * DAY - 5 * MINUTE)), 5 * MINUTE)
  })
})

/** A fake CA: records when orders happen; each order either fails or issues a certificate. */
const harness = (options: { lifetime: number; failFirst?: number; initial?: Validity }) =>
  Effect.gen(function*() {
    const orders: Array<number> = []
    const failures: Array<number> = []
    let current: Validity | undefined = options.initial
    let toFail = options.failFirst ?? 0
    const fiber = yield* Effect.forkChild(renewalLoop<string>({
      current: () => current,
      order: Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        orders.push(now)
        if (toFail > 0) {
          toFail--
          return yield* Effect.fail("urn:ietf:params:acme:error:serverInternal")
        }
        current = { notBefore: now, notAfter: now + options.lifetime }
      }),
      failed: (_error, inARow) => Effect.sync(() => failures.push(inARow))
    }))
    return { orders, failures, fiber, current: () => current }
  })

describe("renewalLoop on TestClock", () => {
  it.effect("orders at once with no certificate, then again exactly on day 60, and not in between", () =>
    Effect.gen(function*() {
      const h = yield* harness({ lifetime: 90 * DAY })
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(h.orders, [0])
      yield* TestClock.adjust(Duration.millis(60 * DAY - 2))
      assert.deepStrictEqual(h.orders, [0])
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(h.orders, [0, 60 * DAY])
      yield* TestClock.adjust(Duration.millis(60 * DAY))
      assert.deepStrictEqual(h.orders, [0, 60 * DAY, 120 * DAY])
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("a valid cached certificate at boot: no order until it is due", () =>
    Effect.gen(function*() {
      // Issued 10 days "ago" relative to the test epoch: due on day 50.
      const h = yield* harness({ lifetime: 90 * DAY, initial: { notBefore: -10 * DAY, notAfter: 80 * DAY } })
      yield* TestClock.adjust(Duration.millis(50 * DAY - 1))
      assert.deepStrictEqual(h.orders, [])
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(h.orders, [50 * DAY])
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("a cached certificate that is already due at boot is renewed at once (and still served meanwhile)", () =>
    Effect.gen(function*() {
      const h = yield* harness({ lifetime: 90 * DAY, initial: { notBefore: -70 * DAY, notAfter: 20 * DAY } })
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(h.orders, [0])
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("failed orders are retried after 1, 2, 4 … 32 min, then hourly; a success resets the backoff", () =>
    Effect.gen(function*() {
      const h = yield* harness({ lifetime: 90 * DAY, failFirst: 9 })
      // Retry gaps 1,2,4,8,16,32,60,60,60 min after the orders at t = 0, 1, 3, 7, 15, 31, 63, 123, 183 min.
      yield* TestClock.adjust(Duration.minutes(243))
      assert.deepStrictEqual(h.orders.map((t) => t / MINUTE), [0, 1, 3, 7, 15, 31, 63, 123, 183, 243])
      assert.deepStrictEqual(h.failures, [1, 2, 3, 4, 5, 6, 7, 8, 9])
      // The 10th succeeded at 243 min; the next is the renewal, 60 days later, not a retry.
      yield* TestClock.adjust(Duration.millis(60 * DAY - 1))
      assert.strictEqual(h.orders.length, 10)
      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual(h.orders.length, 11)
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("a renewal that fails keeps the old certificate and retries with backoff before it expires", () =>
    Effect.gen(function*() {
      const h = yield* harness({ lifetime: 90 * DAY, initial: { notBefore: 0, notAfter: 90 * DAY }, failFirst: 2 })
      yield* TestClock.adjust(Duration.millis(60 * DAY))
      assert.deepStrictEqual(h.orders, [60 * DAY])
      yield* TestClock.adjust(Duration.minutes(1))
      assert.deepStrictEqual(h.orders, [60 * DAY, 60 * DAY + MINUTE])
      yield* TestClock.adjust(Duration.minutes(2))
      assert.deepStrictEqual(h.orders, [60 * DAY, 60 * DAY + MINUTE, 60 * DAY + 3 * MINUTE])
      assert.deepStrictEqual(h.current(), { notBefore: 60 * DAY + 3 * MINUTE, notAfter: 150 * DAY + 3 * MINUTE })
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("a CA that issues certificates already due is asked again only after a minute", () =>
    Effect.gen(function*() {
      // Lifetime 0: every certificate is due the moment it is issued.
      const h = yield* harness({ lifetime: 0 })
      yield* TestClock.adjust(Duration.minutes(3))
      assert.deepStrictEqual(h.orders.map((t) => t / MINUTE), [0, 1, 2, 3])
      yield* Fiber.interrupt(h.fiber)
    }))
})
