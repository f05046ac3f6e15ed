/**
 * Log amplification (SPEC §11, issue 12 item 10): warnings a peer's input causes are limited to
 * one line per connection and reason per second, the next line carrying `suppressed`; a logged
 * `server_id` / `device_name` (and the server-id inside a conn_id) is cut at 128 UTF-8 bytes and
 * marked `…`. Through the binary forwarder with fake connections, time from `TestClock`.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import { TestClock } from "effect/testing"
import { forwardBinary } from "../../src/forwarding/BinaryForwarder.ts"
import * as Log from "../../src/observability/Log.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import { HELD, makePeerWarnings } from "../../src/observability/PeerWarnings.ts"
import { makeLogger } from "../../src/observability/RelayLogger.ts"
import { makeRegistry, type RegistryShape } from "../../src/registry/Registry.ts"
import { binaryHandle, count, isolated, settle } from "../support/Core.ts"
import { type FakeConnection, makeFakeConnection } from "../support/FakeConnection.ts"

type Line = Record<string, unknown>

/** Runs `effect` with the relay's JSON logger writing into the returned array. */
const capturingLogs = <A, E, R>(effect: (lines: Array<Line>) => Effect.Effect<A, E, R>) => {
  const lines: Array<Line> = []
  const logger = makeLogger("json", (line) => lines.push(JSON.parse(line) as Line))
  return isolated(Effect.provideService(effect(lines), Logger.CurrentLoggers, new Set([logger])))
}

const events = (lines: ReadonlyArray<Line>, event: string) => lines.filter((l) => l.event === event)

/** A registry with a forwarding binary for `serverId`; returns its connection. */
const forwardingBinary = (registry: RegistryShape, serverId: string) =>
  Effect.gen(function*() {
    const conn = yield* makeFakeConnection()
    const binary = binaryHandle(serverId, conn)
    yield* registry.claim(binary)
    yield* Effect.forkChild(forwardBinary(binary, registry))
    return conn
  })

const setup = Effect.gen(function*() {
  const scope = yield* Effect.scope
  return yield* makeRegistry({ gracePeriod: Duration.seconds(30), maxPhonesPerServer: 16, scope })
})

const times = (n: number, text: string): Array<string> => Array.from({ length: n }, () => text)

const pushAndSettle = (conn: FakeConnection, ...texts: ReadonlyArray<string>) =>
  Effect.andThen(Effect.sync(() => conn.push(...texts)), settle)

describe("peer-caused warnings: one line per connection and reason per second", () => {
  it.effect("1 000 malformed envelopes within a second are one line; the next second's line says suppressed 999", () =>
    capturingLogs((lines) =>
      Effect.gen(function*() {
        const registry = yield* setup
        const conn = yield* forwardingBinary(registry, "s")
        for (let i = 0; i < 10; i++) {
          yield* pushAndSettle(conn, ...times(100, "not json"))
          yield* TestClock.adjust(Duration.millis(99))
        }
        // 990 ms after the first line: still the same second. Every envelope is still counted.
        assert.strictEqual(yield* count(Metrics.framesDropped.malformed_envelope), 1000)
        assert.strictEqual(events(lines, "envelope dropped").length, 1)
        assert.strictEqual(events(lines, "envelope dropped")[0]!.reason, "malformed")
        assert.isUndefined(events(lines, "envelope dropped")[0]!.suppressed)

        yield* TestClock.adjust(Duration.millis(10))
        yield* pushAndSettle(conn, "not json", "not json")
        const dropped = events(lines, "envelope dropped")
        assert.strictEqual(dropped.length, 2)
        assert.strictEqual(dropped[1]!.suppressed, 999)
        assert.strictEqual(dropped[1]!.server_id, "s")

        // Quiet for a while: the next line is written at once and counts the one held back since.
        yield* TestClock.adjust(Duration.seconds(5))
        yield* pushAndSettle(conn, "not json")
        assert.strictEqual(events(lines, "envelope dropped").length, 3)
        assert.strictEqual(events(lines, "envelope dropped")[2]!.suppressed, 1)
      })
    ))

  it.effect("reasons are independent: malformed, missing conn_id, unknown conn_id and a push wake each get their line", () =>
    capturingLogs((lines) =>
      Effect.gen(function*() {
        const registry = yield* setup
        const conn = yield* forwardingBinary(registry, "s")
        yield* pushAndSettle(
          conn,
          ...times(50, "[]"),
          ...times(50, "{\"frame\":1}"),
          ...times(50, "{\"conn_id\":\"client-s-00000000\",\"frame\":1}"),
          ...times(50, "{\"push_wake\":{}}")
        )
        const reasons = events(lines, "envelope dropped").map((l) => l.reason)
        assert.deepStrictEqual(reasons, ["malformed", "missing conn_id", "unknown conn_id"])
        assert.strictEqual(events(lines, "push wake dropped").length, 1)
      })
    ))

  it.effect("connections are independent: two binaries flooding at once get a line each", () =>
    capturingLogs((lines) =>
      Effect.gen(function*() {
        const registry = yield* setup
        const a = yield* forwardingBinary(registry, "a")
        const b = yield* forwardingBinary(registry, "b")
        yield* pushAndSettle(a, ...times(100, "{}"))
        yield* pushAndSettle(b, ...times(100, "{}"))
        yield* pushAndSettle(a, ...times(100, "{}"))
        assert.deepStrictEqual(events(lines, "envelope dropped").map((l) => l.server_id), ["a", "b"])
      })
    ))
})

describe("PeerWarnings", () => {
  it("a line per second per reason; the window starts at the line written; a clock set back does not silence a reason", () => {
    const warnings = makePeerWarnings()
    assert.deepStrictEqual([0, 500, 999].map((t) => warnings.admit("r", 10_000 + t)), [0, HELD, HELD])
    assert.strictEqual(warnings.admit("r", 11_000), 2)
    assert.strictEqual(warnings.admit("r", 11_999), HELD)
    assert.strictEqual(warnings.admit("other", 11_999), 0)
    // The wall clock jumps back an hour: the next occurrence is written, not held for an hour.
    assert.strictEqual(warnings.admit("r", 11_999 - 3_600_000), 1)
    assert.strictEqual(warnings.admit("r", 11_999 - 3_600_000 + 10), HELD)
  })
})

describe("long peer-supplied values are cut at 128 UTF-8 bytes", () => {
  const logged = (fields: Log.LogFields) =>
    capturingLogs((lines) => Effect.as(Log.warn("envelope dropped", fields), lines))

  it.effect("a 16 KiB server-id: server_id keeps 128 bytes and `…`; conn ids keep their prefix and suffix", () =>
    Effect.gen(function*() {
      const serverId = "x".repeat(16_384)
      const [line] = yield* logged({
        server_id: serverId,
        binary_conn_id: `server-${serverId}-0a1b2c3d`,
        conn_id: `client-${serverId}-deadbeef`
      })
      assert.strictEqual(line!.server_id, `${"x".repeat(128)}…`)
      assert.strictEqual(line!.binary_conn_id, `server-${"x".repeat(128)}…-0a1b2c3d`)
      assert.strictEqual(line!.conn_id, `client-${"x".repeat(128)}…-deadbeef`)
      assert.isBelow(JSON.stringify(line).length, 600)
    }))

  it.effect("the cut never splits a character; values of 128 bytes or less are kept whole", () =>
    Effect.gen(function*() {
      const [line] = yield* logged({
        server_id: "a" + "é".repeat(100), // 1 + 200 bytes: 1 + 63 × 2 = 127 bytes fit
        device_name: "😀".repeat(40), // 4 bytes each: 32 fit
        binary_version: "v".repeat(128),
        remote: "€".repeat(43) // 3 bytes each: 129 bytes, 42 fit
      })
      assert.strictEqual(line!.server_id, "a" + "é".repeat(63) + "…")
      assert.strictEqual(line!.device_name, "😀".repeat(32) + "…")
      assert.strictEqual(line!.binary_version, "v".repeat(128))
      assert.strictEqual(line!.remote, "€".repeat(42) + "…")
    }))

  it.effect("the forwarder's lines for a binary with a 16 KiB server-id stay short", () =>
    capturingLogs((lines) =>
      Effect.gen(function*() {
        const registry = yield* setup
        const conn = yield* forwardingBinary(registry, "y".repeat(16_384))
        yield* pushAndSettle(conn, "{}")
        const [line] = events(lines, "envelope dropped")
        assert.strictEqual(line!.server_id, `${"y".repeat(128)}…`)
        assert.isBelow(JSON.stringify(line).length, 600)
      })
    ))
})
