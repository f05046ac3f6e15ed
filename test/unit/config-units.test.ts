import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Result from "effect/Result"
import {
  formatDuration,
  formatListen,
  isLoopbackLiteral,
  parseDuration,
  parseListen,
  parseListenOrEvery,
  parseSize
} from "../../src/config/Units.ts"

const ms = (d: Duration.Duration) => Duration.toMillis(d)

const ok = <A>(r: Result.Result<A, string>): A => {
  if (Result.isFailure(r)) throw new Error(`expected success, got ${r.failure}`)
  return r.success
}
const bad = <A>(r: Result.Result<A, string>): string => {
  if (Result.isSuccess(r)) throw new Error(`expected failure, got ${JSON.stringify(r.success)}`)
  return r.failure
}

describe("Units", () => {
  it("parses durations in ms, s, m, h and Go-style sums", () => {
    assert.strictEqual(ms(ok(parseDuration("500ms"))), 500)
    assert.strictEqual(ms(ok(parseDuration("30s"))), 30_000)
    assert.strictEqual(ms(ok(parseDuration("2m"))), 120_000)
    assert.strictEqual(ms(ok(parseDuration("1h"))), 3_600_000)
    assert.strictEqual(ms(ok(parseDuration("1m30s"))), 90_000)
    assert.strictEqual(ms(ok(parseDuration("0"))), 0)
    assert.strictEqual(ms(ok(parseDuration("0s"))), 0)
  })

  it("refuses junk, negative, fractional, unitless and over-long durations", () => {
    assert.include(bad(parseDuration("abc")), "is not a duration (use 500ms, 30s, 2m)")
    assert.include(bad(parseDuration("-5s")), "negative")
    assert.include(bad(parseDuration("30")), "no unit")
    for (const raw of ["", "1.5s", "30 s", "30S", "s", "5d", "1e3ms", "+5s", "30s "]) {
      assert.include(bad(parseDuration(raw)), "not a duration", raw)
    }
    assert.include(bad(parseDuration("25h")), "longer than 24h")
  })

  it("parses sizes in bytes, KiB, MiB", () => {
    assert.strictEqual(ok(parseSize("262144")), 262_144)
    assert.strictEqual(ok(parseSize("256KiB")), 262_144)
    assert.strictEqual(ok(parseSize("4MiB")), 4_194_304)
    assert.strictEqual(ok(parseSize("1GiB")), 1_073_741_824)
    for (const raw of ["", "4mb", "256KB", "1.5MiB", "4 MiB", "abc", "0x10"]) {
      assert.include(bad(parseSize(raw)), "not a size", raw)
    }
    assert.include(bad(parseSize("-1")), "negative")
    assert.include(bad(parseSize("99999999999999999999")), "too large")
  })

  it("parses listen addresses and refuses port 0, port > 65535 and missing hosts", () => {
    assert.deepStrictEqual(ok(parseListen("127.0.0.1:8080")), { host: "127.0.0.1", port: 8080 })
    assert.deepStrictEqual(ok(parseListen("[::1]:9090")), { host: "::1", port: 9090 })
    assert.deepStrictEqual(ok(parseListen("[::]:443")), { host: "::", port: 443 })
    assert.deepStrictEqual(ok(parseListen("relay.internal:65535")), { host: "relay.internal", port: 65535 })
    assert.include(bad(parseListen("127.0.0.1:0")), "out of range")
    assert.include(bad(parseListen("127.0.0.1:65536")), "out of range")
    assert.include(bad(parseListen("127.0.0.1:99999")), "out of range")
    assert.include(bad(parseListen(":8080")), "no host")
    for (const raw of ["", "127.0.0.1", "::1:9090", "[::1]", "[::1]9090", "[1.2.3.4]:80", "999.1.1.1:80", "h:p", "a b:80"]) {
      bad(parseListen(raw))
    }
  })

  it("formats durations and addresses the way they are parsed back (the defaults in --help)", () => {
    assert.strictEqual(formatDuration(Duration.millis(500)), "500ms")
    assert.strictEqual(formatDuration(Duration.seconds(30)), "30s")
    assert.strictEqual(formatDuration(Duration.minutes(2)), "2m")
    assert.strictEqual(formatDuration(Duration.seconds(90)), "1m30s")
    assert.strictEqual(formatDuration(Duration.millis(3_723_004)), "1h2m3s4ms")
    assert.strictEqual(formatDuration(Duration.zero), "0")
    for (const millis of [0, 1, 999, 1_000, 6_000, 59_999, 3_600_000, 86_400_000]) {
      assert.strictEqual(ms(ok(parseDuration(formatDuration(Duration.millis(millis))))), millis, `${millis}`)
    }
    assert.strictEqual(formatListen({ host: "127.0.0.1", port: 8080 }), "127.0.0.1:8080")
    assert.strictEqual(formatListen({ host: "::1", port: 9090 }), "[::1]:9090")
    assert.strictEqual(formatListen({ host: "", port: 443 }), ":443")
    for (const raw of ["127.0.0.1:8080", "[::1]:9090", ":443", "relay.internal:80"]) {
      assert.strictEqual(formatListen(ok(parseListenOrEvery(raw))), raw)
    }
  })

  it("knows loopback IP literals", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "::1", "0:0:0:0:0:0:0:1"]) assert.isTrue(isLoopbackLiteral(host), host)
    for (const host of ["0.0.0.0", "10.0.0.1", "::", "localhost", "::ffff:127.0.0.1", "128.0.0.1"]) {
      assert.isFalse(isLoopbackLiteral(host), host)
    }
  })
})
