import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import { RelayConfig } from "../../src/config/RelayConfig.ts"
import { clientIp } from "../../src/limits/ClientIp.ts"
import { ConnectionCaps, makeCaps } from "../../src/limits/ConnectionCaps.ts"
import { makeBuckets, makeRateLimiter, RateLimiter } from "../../src/limits/RateLimiter.ts"

/** Attempts `n` upgrades from `ip` at the current test time; returns how many were allowed. */
const attempts = (limiter: { readonly take: (ip: string | undefined) => Effect.Effect<boolean> }, ip: string, n: number) =>
  Effect.gen(function*() {
    let allowed = 0
    for (let i = 0; i < n; i++) if (yield* limiter.take(ip)) allowed++
    return allowed
  })

const defaultLimiter = makeRateLimiter({ burst: 20, refill: Duration.seconds(6) })

describe("RateLimiter", () => {
  it.effect("allows a burst of 20, then denies the 21st", () =>
    Effect.gen(function*() {
      const limiter = yield* defaultLimiter
      assert.strictEqual(yield* attempts(limiter, "203.0.113.1", 20), 20)
      assert.isFalse(yield* limiter.take("203.0.113.1"))
    }))

  it.effect("gives back exactly one token after 6 s, not before", () =>
    Effect.gen(function*() {
      const limiter = yield* defaultLimiter
      yield* attempts(limiter, "203.0.113.1", 21)
      yield* TestClock.adjust(Duration.millis(5_999))
      assert.isFalse(yield* limiter.take("203.0.113.1"))
      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual(yield* attempts(limiter, "203.0.113.1", 5), 1)
    }))

  it.effect("keeps fractional time: 9 s then 3 s more yield two tokens in total", () =>
    Effect.gen(function*() {
      const limiter = yield* defaultLimiter
      yield* attempts(limiter, "203.0.113.1", 20)
      yield* TestClock.adjust(Duration.seconds(9))
      assert.strictEqual(yield* attempts(limiter, "203.0.113.1", 5), 1)
      yield* TestClock.adjust(Duration.seconds(3))
      assert.strictEqual(yield* attempts(limiter, "203.0.113.1", 5), 1)
    }))

  it.effect("a client retrying every 4 s still gets one upgrade per 6 s", () =>
    Effect.gen(function*() {
      const limiter = yield* defaultLimiter
      yield* attempts(limiter, "203.0.113.1", 20)
      let allowed = 0
      for (let i = 0; i < 30; i++) {
        yield* TestClock.adjust(Duration.seconds(4))
        if (yield* limiter.take("203.0.113.1")) allowed++
      }
      assert.strictEqual(allowed, 20) // 120 s / 6 s
    }))

  it.effect("refills no further than the burst however long the bucket was idle", () =>
    Effect.gen(function*() {
      const limiter = yield* defaultLimiter
      yield* attempts(limiter, "203.0.113.1", 20)
      yield* TestClock.adjust(Duration.minutes(4)) // the sweeper may drop it; a fresh bucket is full too
      assert.strictEqual(yield* attempts(limiter, "203.0.113.1", 40), 20)
    }))

  it.effect("isolates IPs: one exhausted IP does not limit another", () =>
    Effect.gen(function*() {
      const limiter = yield* defaultLimiter
      yield* attempts(limiter, "203.0.113.1", 25)
      assert.strictEqual(yield* attempts(limiter, "203.0.113.2", 20), 20)
      assert.isFalse(yield* limiter.take("203.0.113.1"))
      assert.strictEqual(limiter.size(), 2)
    }))

  it.effect("denies an undeterminable IP without creating a bucket", () =>
    Effect.gen(function*() {
      const limiter = yield* defaultLimiter
      assert.isFalse(yield* limiter.take(undefined))
      assert.strictEqual(limiter.size(), 0)
    }))

  it.effect("burst 0 disables the limit", () =>
    Effect.gen(function*() {
      const limiter = yield* makeRateLimiter({ burst: 0, refill: Duration.seconds(6) })
      assert.strictEqual(yield* attempts(limiter, "203.0.113.1", 1000), 1000)
      assert.isTrue(yield* limiter.take(undefined))
      assert.strictEqual(limiter.size(), 0)
    }))

  it.effect("the 5-minute sweep drops idle buckets and keeps an IP that kept hammering", () =>
    Effect.gen(function*() {
      const limiter = yield* defaultLimiter
      yield* limiter.take("198.51.100.7") // then silent
      yield* attempts(limiter, "203.0.113.1", 20)
      // 203.0.113.1 keeps trying every 2 s, mostly denied, right up to the sweep.
      for (let i = 0; i < 149; i++) {
        yield* TestClock.adjust(Duration.seconds(2))
        yield* limiter.take("203.0.113.1")
      }
      yield* TestClock.adjust(Duration.millis(1_999))
      assert.strictEqual(limiter.size(), 2) // 299.999 s: no sweep yet
      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual(limiter.size(), 1)
      yield* limiter.take("203.0.113.1")
      assert.strictEqual(limiter.size(), 1) // the survivor is the hammering IP
    }))

  it.effect("the sweep keeps running every 5 minutes", () =>
    Effect.gen(function*() {
      const limiter = yield* defaultLimiter
      yield* TestClock.adjust(Duration.minutes(5))
      yield* limiter.take("198.51.100.7")
      yield* TestClock.adjust(Duration.minutes(4))
      assert.strictEqual(limiter.size(), 1) // idle 4 min but no sweep since
      yield* TestClock.adjust(Duration.minutes(1))
      assert.strictEqual(limiter.size(), 0)
    }))

  it.effect("the sweeper stops with the layer's scope", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const limiter = yield* Scope.provide(defaultLimiter, scope)
      yield* limiter.take("198.51.100.7")
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust(Duration.minutes(10))
      assert.strictEqual(limiter.size(), 1)
    }))

  it.effect("the layer reads burst and refill from RelayConfig", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter
      assert.strictEqual(yield* attempts(limiter, "203.0.113.1", 5), 2)
      yield* TestClock.adjust(Duration.seconds(1))
      assert.strictEqual(yield* attempts(limiter, "203.0.113.1", 5), 1)
    }).pipe(
      Effect.provide(RateLimiter.layer),
      Effect.provide(RelayConfig.layerFromValues({ rateLimitBurst: 2, rateLimitRefill: Duration.seconds(1) }))
    ))
})

describe("makeBuckets (pure core)", () => {
  it("drops a bucket at 120 s idle, not at 119.999 s", () => {
    const buckets = makeBuckets({ burst: 20, refillMillis: 6_000 })
    buckets.take("203.0.113.1", 0)
    assert.strictEqual(buckets.sweep(119_999), 0)
    assert.strictEqual(buckets.size(), 1)
    assert.strictEqual(buckets.sweep(120_000), 1)
    assert.strictEqual(buckets.size(), 0)
  })

  it("does not forget an idle bucket that a slow refill has not filled yet", () => {
    // burst 2 × 100 s: forgetting it at 120 s idle would hand out a fresh burst early.
    const buckets = makeBuckets({ burst: 2, refillMillis: 100_000 })
    buckets.take("203.0.113.1", 0)
    buckets.take("203.0.113.1", 0)
    assert.strictEqual(buckets.sweep(130_000), 0)
    assert.isTrue(buckets.take("203.0.113.1", 130_000))
    assert.isFalse(buckets.take("203.0.113.1", 130_000))
    assert.strictEqual(buckets.sweep(400_000), 1)
  })
})

describe("ConnectionCaps", () => {
  const admitted = (admission: ReturnType<ReturnType<typeof makeCaps>["tryAcquire"]>) => {
    assert.strictEqual(admission._tag, "Admitted")
    if (admission._tag !== "Admitted") throw new Error("unreachable")
    return admission
  }
  const rejection = (admission: ReturnType<ReturnType<typeof makeCaps>["tryAcquire"]>) =>
    admission._tag === "Rejected" ? admission.reason : "admitted"

  it("rejects with conn_cap once the global pool is full, whatever the IP", () => {
    const caps = makeCaps({ maxConnections: 3, maxConnectionsPerIp: 64 })
    admitted(caps.tryAcquire("203.0.113.1"))
    admitted(caps.tryAcquire("203.0.113.2"))
    admitted(caps.tryAcquire("203.0.113.3"))
    assert.strictEqual(rejection(caps.tryAcquire("203.0.113.4")), "conn_cap")
    assert.strictEqual(caps.active(), 3)
  })

  it("rejects with per_ip_cap when one IP holds its share, while others still get in", () => {
    const caps = makeCaps({ maxConnections: 100, maxConnectionsPerIp: 2 })
    admitted(caps.tryAcquire("203.0.113.1"))
    admitted(caps.tryAcquire("203.0.113.1"))
    assert.strictEqual(rejection(caps.tryAcquire("203.0.113.1")), "per_ip_cap")
    admitted(caps.tryAcquire("203.0.113.2"))
    assert.strictEqual(caps.active(), 3)
    assert.strictEqual(caps.activeFor("203.0.113.1"), 2)
  })

  it("reports conn_cap first when both caps are reached", () => {
    const caps = makeCaps({ maxConnections: 2, maxConnectionsPerIp: 2 })
    admitted(caps.tryAcquire("203.0.113.1"))
    admitted(caps.tryAcquire("203.0.113.1"))
    assert.strictEqual(rejection(caps.tryAcquire("203.0.113.1")), "conn_cap")
  })

  it("release frees both the global and the per-IP slot, and drops the IP entry at 0", () => {
    const caps = makeCaps({ maxConnections: 1, maxConnectionsPerIp: 1 })
    const first = admitted(caps.tryAcquire("203.0.113.1"))
    assert.strictEqual(rejection(caps.tryAcquire("203.0.113.1")), "conn_cap")
    first.release()
    assert.strictEqual(caps.active(), 0)
    assert.strictEqual(caps.trackedIps(), 0)
    admitted(caps.tryAcquire("203.0.113.1"))
  })

  it("a double release frees only one slot", () => {
    const caps = makeCaps({ maxConnections: 2, maxConnectionsPerIp: 2 })
    const a = admitted(caps.tryAcquire("203.0.113.1"))
    admitted(caps.tryAcquire("203.0.113.1"))
    a.release()
    a.release()
    assert.strictEqual(caps.active(), 1)
    assert.strictEqual(caps.activeFor("203.0.113.1"), 1)
    admitted(caps.tryAcquire("203.0.113.1"))
    assert.strictEqual(rejection(caps.tryAcquire("203.0.113.1")), "conn_cap")
    assert.strictEqual(rejection(caps.tryAcquire("203.0.113.2")), "conn_cap")
  })

  it("a per-IP cap of 0 is off", () => {
    const caps = makeCaps({ maxConnections: 1000, maxConnectionsPerIp: 0 })
    for (let i = 0; i < 500; i++) admitted(caps.tryAcquire("203.0.113.1"))
    assert.strictEqual(caps.active(), 500)
    assert.strictEqual(caps.trackedIps(), 0)
  })

  it("an admission without an IP counts toward the global cap only", () => {
    const caps = makeCaps({ maxConnections: 2, maxConnectionsPerIp: 1 })
    const anonymous = admitted(caps.tryAcquire(undefined))
    admitted(caps.tryAcquire(undefined))
    assert.strictEqual(rejection(caps.tryAcquire(undefined)), "conn_cap")
    assert.strictEqual(caps.trackedIps(), 0)
    anonymous.release()
    assert.strictEqual(caps.active(), 1)
  })

  it.effect("the service reads its caps from RelayConfig and acquireScoped releases with the scope", () =>
    Effect.gen(function*() {
      const caps = yield* ConnectionCaps
      const scope = yield* Scope.make()
      const held = yield* Scope.provide(caps.acquireScoped("203.0.113.1"), scope)
      assert.strictEqual(held._tag, "Admitted")
      assert.strictEqual(caps.tryAcquire("203.0.113.1")._tag, "Admitted")
      const third = caps.tryAcquire("203.0.113.1")
      assert.strictEqual(third._tag === "Rejected" ? third.reason : "admitted", "per_ip_cap")
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(caps.activeFor("203.0.113.1"), 1)
      const again = yield* Scope.provide(caps.acquireScoped("203.0.113.2"), scope)
      assert.strictEqual(again._tag, "Admitted")
    }).pipe(
      Effect.provide(ConnectionCaps.layer),
      Effect.provide(RelayConfig.layerFromValues({ maxConnections: 3, maxConnectionsPerIp: 2 }))
    ))
})

describe("clientIp", () => {
  const cases: ReadonlyArray<
    readonly [string, string | undefined, string | ReadonlyArray<string> | undefined, boolean, string | undefined]
  > = [
    ["socket address without trust", "203.0.113.1", undefined, false, "203.0.113.1"],
    ["X-Forwarded-For ignored without trust", "203.0.113.1", "198.51.100.7", false, "203.0.113.1"],
    ["left-most entry with trust", "10.0.0.1", "198.51.100.7, 10.0.0.2", true, "198.51.100.7"],
    ["entries are trimmed", "10.0.0.1", "   198.51.100.7  ,10.0.0.2", true, "198.51.100.7"],
    ["blank entries are skipped", "10.0.0.1", " , ,198.51.100.7, 10.0.0.2", true, "198.51.100.7"],
    ["all-blank header falls back to the socket", "10.0.0.1", " , ", true, "10.0.0.1"],
    ["empty header falls back to the socket", "10.0.0.1", "", true, "10.0.0.1"],
    ["missing header falls back to the socket", "10.0.0.1", undefined, true, "10.0.0.1"],
    ["several header lines: the first line's left-most", "10.0.0.1", ["198.51.100.7, 10.0.0.3", "192.0.2.9"], true, "198.51.100.7"],
    ["several header lines, first one blank", "10.0.0.1", [" ", "192.0.2.9"], true, "192.0.2.9"],
    ["mapped IPv6 socket address", "::ffff:203.0.113.1", undefined, false, "203.0.113.1"],
    ["mapped IPv6, upper case", "::FFFF:203.0.113.1", undefined, false, "203.0.113.1"],
    ["mapped IPv6 in X-Forwarded-For", "10.0.0.1", "::ffff:198.51.100.7", true, "198.51.100.7"],
    ["plain IPv6 untouched", "2001:db8::1", undefined, false, "2001:db8::1"],
    ["IPv6 with ffff elsewhere untouched", "2001:db8::ffff:1", undefined, false, "2001:db8::ffff:1"],
    ["missing socket address", undefined, undefined, false, undefined],
    ["missing socket address, header not trusted", undefined, "198.51.100.7", false, undefined],
    ["missing socket address, trusted header", undefined, "198.51.100.7", true, "198.51.100.7"],
    ["missing socket address, blank trusted header", undefined, " ,", true, undefined],
    ["empty socket address", "", undefined, false, undefined]
  ]
  for (const [name, remote, xff, trust, expected] of cases) {
    it(name, () => assert.strictEqual(clientIp(remote, xff, trust), expected))
  }
})
