/**
 * Forwarders with in-memory sources and sinks (SPEC §4.1, §4.2): what is written, what is
 * counted, and which typed error ends a phone session.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { makeBufferLedger } from "../../src/connection/BufferLedger.ts"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import { forwardBinary } from "../../src/forwarding/BinaryForwarder.ts"
import { forwardPhone, type PhoneForwarderDeps } from "../../src/forwarding/PhoneForwarder.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import { PushWake, type PushWakeShape } from "../../src/push/PushWake.ts"
import type { BinaryHandle } from "../../src/registry/Handles.ts"
import { makeRegistry, type RegistryShape } from "../../src/registry/Registry.ts"
import { bigLedger, binaryHandle, count, isolated, phoneHandle, settle } from "../support/Core.ts"
import { type FakeConnection, makeFakeConnection } from "../support/FakeConnection.ts"

const BUDGET = 4_194_304

const setup = Effect.gen(function*() {
  const scope = yield* Effect.scope
  const registry = yield* makeRegistry({ gracePeriod: Duration.seconds(30), maxPhonesPerServer: 16, scope })
  const binaryConn = yield* makeFakeConnection()
  const binary = binaryHandle("s", binaryConn)
  yield* registry.claim(binary)
  return { registry, binary, binaryConn }
})

const addPhone = (
  registry: RegistryShape,
  serverId: string,
  options: { readonly budget?: number; readonly conn?: FakeConnection } = {}
) =>
  Effect.gen(function*() {
    const conn = options.conn ?? (yield* makeFakeConnection())
    const phone = yield* registry.registerPhone(
      serverId,
      phoneHandle(conn, options.budget === undefined ? {} : { budget: options.budget })
    )
    return { phone, conn }
  })

const deps = (registry: RegistryShape, binaryBudget = BUDGET): PhoneForwarderDeps => ({
  registry,
  ledger: bigLedger(),
  binaryBudget
})

describe("phone forwarder", () => {
  it.effect("three frames are written and counted; a frame the binary cannot accept ends with BinaryWriteFailed, uncounted", () =>
    isolated(Effect.gen(function*() {
      const { binaryConn, registry } = yield* setup
      const { conn, phone } = yield* addPhone(registry, "s")
      const forwarder = yield* Effect.forkChild(Effect.flip(forwardPhone(phone, deps(registry))))

      conn.push("1", "2", "3")
      yield* settle
      assert.deepStrictEqual(binaryConn.sent, ["1", "2", "3"].map((f) => `${phone.envelopePrefix}${f}}`))
      assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 3)

      binaryConn.writes = "fail"
      conn.push("4")
      const error = yield* Fiber.join(forwarder)
      assert.strictEqual(error._tag, "BinaryWriteFailed")
      assert.strictEqual(error.frames, 1)
      assert.strictEqual(binaryConn.sent.length, 3)
      assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 3)
      assert.strictEqual(
        yield* count(Metrics.bytesForwardedPhoneToBinary),
        binaryConn.sent.reduce((n, s) => n + Buffer.byteLength(s), 0)
      )
    })))

  it.effect("a binary over its write budget is a failed write: BinaryWriteFailed, nothing sent, nothing counted", () =>
    isolated(Effect.gen(function*() {
      const { binaryConn, registry } = yield* setup
      const { conn, phone } = yield* addPhone(registry, "s")
      const envelope = `${phone.envelopePrefix}"x"}`
      binaryConn.writes = "stall"
      // Exactly two envelopes fit in the binary's unflushed budget.
      const forwarder = yield* Effect.forkChild(Effect.flip(forwardPhone(phone, deps(registry, envelope.length * 2))))

      conn.push("\"x\"", "\"x\"")
      yield* settle
      assert.strictEqual(binaryConn.pendingBytes(), envelope.length * 2)
      assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 2)

      conn.push("\"x\"")
      const error = yield* Fiber.join(forwarder)
      assert.strictEqual(error._tag, "BinaryWriteFailed")
      assert.strictEqual(binaryConn.sent.length, 2)
      assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 2)
    })))

  it.effect("frames go to the binary holding the slot at that moment; with the binary in grace the session ends NoBinary", () =>
    isolated(Effect.gen(function*() {
      const { binary, binaryConn, registry } = yield* setup
      const { conn, phone } = yield* addPhone(registry, "s")
      const forwarder = yield* Effect.forkChild(Effect.flip(forwardPhone(phone, deps(registry))))

      conn.push("{\"a\":1}", "[2]", "3")
      yield* settle
      yield* registry.release(binary)
      conn.push("4")
      const error = yield* Fiber.join(forwarder)
      assert.strictEqual(error._tag, "NoBinary")
      assert.strictEqual(error.frames, 1)
      assert.strictEqual(binaryConn.sent.length, 3)
      assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 3)
    })))

  it.effect("invalid JSON ends with InvalidJson: the valid frames before it are written, it and those after are not", () =>
    isolated(Effect.gen(function*() {
      const { binaryConn, registry } = yield* setup
      const { conn, phone } = yield* addPhone(registry, "s")
      conn.push("1", "true", "\"s\"", "{not json", "5")

      const error = yield* Effect.flip(forwardPhone(phone, deps(registry)))
      assert.strictEqual(error._tag, "InvalidJson")
      assert.strictEqual(error.frames, 2)
      assert.deepStrictEqual(binaryConn.sent, ["1", "true", "\"s\""].map((f) => `${phone.envelopePrefix}${f}}`))
      assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 3)
    })))

  it.effect("empty and whitespace-only messages are invalid JSON", () =>
    isolated(Effect.gen(function*() {
      const { binaryConn, registry } = yield* setup
      for (const text of ["", " \n\t"]) {
        const { conn, phone } = yield* addPhone(registry, "s")
        conn.push(text)
        const error = yield* Effect.flip(forwardPhone(phone, deps(registry)))
        assert.strictEqual(error._tag, "InvalidJson")
      }
      assert.strictEqual(binaryConn.sent.length, 0)
      assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 0)
    })))

  it.effect("the envelope splices the phone's raw text in, byte for byte", () =>
    isolated(Effect.gen(function*() {
      const { binaryConn, registry } = yield* setup
      const { conn, phone } = yield* addPhone(registry, "s")
      const raw = " \n{ \"n\": 1.50, \"big\": 1e400, \"s\": \"a\\\"b\\\\c\\u00e9\", \"z\": -0 }\t"
      conn.push(raw)
      conn.peerClose(1000)
      yield* forwardPhone(phone, deps(registry))
      assert.deepStrictEqual(binaryConn.sent, [`{"conn_id":"${phone.connId}","frame":${raw}}`])
      const parsed = JSON.parse(binaryConn.sent[0]!) as Record<string, unknown>
      assert.deepStrictEqual(Object.keys(parsed), ["conn_id", "frame"])
    })))

  it.effect("the phone closing ends the forwarder normally", () =>
    isolated(Effect.gen(function*() {
      const { registry } = yield* setup
      const { conn, phone } = yield* addPhone(registry, "s")
      conn.push("1")
      conn.peerClose(1000)
      yield* forwardPhone(phone, deps(registry))
      assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 1)
    })))
})

describe("phone forwarder: the batch's typed outcome decides the counter", () => {
  const cases = [
    { tag: "InvalidJson", reason: "invalid_json", arrange: (_binaryConn: FakeConnection) => Effect.void },
    { tag: "BinaryWriteFailed", reason: "binary_write_failed", arrange: (binaryConn: FakeConnection) => Effect.sync(() => void (binaryConn.writes = "fail")) },
    { tag: "NoBinary", reason: "no_binary", arrange: (binaryConn: FakeConnection) => Effect.sync(() => binaryConn.peerClose(1006)) }
  ] as const
  const reasons = cases.map((c) => c.reason)

  for (const { arrange, reason, tag } of cases) {
    it.effect(`${tag}: the forwarder counts the batch's frames under ${reason} itself, and nothing as forwarded`, () =>
      isolated(Effect.gen(function*() {
        const { binaryConn, registry } = yield* setup
        const { conn, phone } = yield* addPhone(registry, "s")
        yield* arrange(binaryConn)
        conn.push(...(tag === "InvalidJson" ? ["not json", "2"] : ["1", "2"]))

        const error = yield* Effect.flip(forwardPhone(phone, deps(registry)))
        assert.strictEqual(error._tag, tag)
        assert.strictEqual(error.frames, 2)
        for (const other of reasons) {
          assert.strictEqual(yield* count(Metrics.framesDropped[other]), other === reason ? 2 : 0, other)
        }
        assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 0)
        assert.strictEqual(yield* count(Metrics.bytesForwardedPhoneToBinary), 0)
      })))
  }

  it.effect("a valid prefix is counted forwarded and the invalid rest invalid_json, each once", () =>
    isolated(Effect.gen(function*() {
      const { binaryConn, registry } = yield* setup
      const { conn, phone } = yield* addPhone(registry, "s")
      conn.push("1", "2", "{", "4", "5")
      const error = yield* Effect.flip(forwardPhone(phone, deps(registry)))
      assert.strictEqual(error._tag, "InvalidJson")
      assert.strictEqual(yield* count(Metrics.framesForwardedPhoneToBinary), 2)
      assert.strictEqual(
        yield* count(Metrics.bytesForwardedPhoneToBinary),
        binaryConn.sent.reduce((n, s) => n + Buffer.byteLength(s), 0)
      )
      assert.strictEqual(yield* count(Metrics.framesDropped.invalid_json), 3)
    })))
})

describe("binary forwarder", () => {
  const envelope = (connId: string, frame: string) => `{"conn_id":${JSON.stringify(connId)},"frame":${frame}}`

  const forward = (binary: BinaryHandle, registry: RegistryShape) => Effect.forkChild(forwardBinary(binary, registry))

  it.effect("counts only frames the writers wrote, counts every drop by reason, and never closes the binary", () =>
    isolated(Effect.gen(function*() {
      const { binary, binaryConn, registry } = yield* setup
      const p1 = yield* addPhone(registry, "s")
      const p2 = yield* addPhone(registry, "s")
      const failing = yield* addPhone(registry, "s", { conn: yield* makeFakeConnection({ writes: "fail" }) })
      const forwarder = yield* forward(binary, registry)

      binaryConn.push(
        envelope(p1.phone.connId, "{\"m\":1}"),
        envelope(p2.phone.connId, "[\"m\",2]"),
        "{\"conn_id\":",
        envelope("client-s-00000000", "3"),
        envelope(failing.phone.connId, "4"),
        envelope(p1.phone.connId, "5.50")
      )
      yield* settle

      assert.deepStrictEqual(p1.conn.sent, ["{\"m\":1}", "5.50"])
      assert.deepStrictEqual(p2.conn.sent, ["[\"m\",2]"])
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 3)
      assert.strictEqual(yield* count(Metrics.framesDropped.malformed_envelope), 1)
      assert.strictEqual(yield* count(Metrics.framesDropped.unknown_conn_id), 1)
      assert.strictEqual(yield* count(Metrics.framesDropped.phone_write_failed), 1)
      assert.strictEqual(yield* count(Metrics.framesDropped.backlog_full), 0)
      assert.deepStrictEqual(failing.conn.closeCalls, [CloseCodes.PhoneWriteFailed])
      assert.strictEqual(failing.conn.closedWith()?.reason, "phone write failed")
      assert.strictEqual(p1.conn.closeCalls.length, 0)
      assert.strictEqual(p2.conn.closeCalls.length, 0)

      // The binary reads on after all of that.
      binaryConn.push(envelope(p2.phone.connId, "6"))
      yield* settle
      assert.deepStrictEqual(p2.conn.sent, ["[\"m\",2]", "6"])
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 4)
      assert.strictEqual(binaryConn.closeCalls.length, 0)
      assert.isTrue(binaryConn.isOpen())
      assert.isUndefined(forwarder.pollUnsafe())

      binaryConn.peerClose(1000)
      yield* Fiber.join(forwarder)
    })))

  it.effect("bad envelopes of every kind are dropped and counted; the binary stays open", () =>
    isolated(Effect.gen(function*() {
      const { binary, binaryConn, registry } = yield* setup
      const p = yield* addPhone(registry, "s")
      const forwarder = yield* forward(binary, registry)
      binaryConn.push(
        "",
        "[]",
        "{\"conn_id\":5,\"frame\":1}",
        `{"conn_id":${JSON.stringify(p.phone.connId)},"frame":1,"close_code":"4000"}`,
        "{\"frame\":1}",
        `{"conn_id":${JSON.stringify(p.phone.connId)}}`,
        "{\"push_wake\":{\"platform\":\"fcm\",\"token\":\"t\"}}"
      )
      yield* settle
      // A wake request is not a frame: it is neither forwarded nor dropped as malformed.
      assert.strictEqual(yield* count(Metrics.framesDropped.malformed_envelope), 6)
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 0)
      assert.deepStrictEqual(p.conn.sent, [])
      assert.strictEqual(p.conn.closeCalls.length, 0)
      assert.strictEqual(binaryConn.closeCalls.length, 0)
      assert.isUndefined(forwarder.pollUnsafe())
    })))

  it.effect("a wake goes to the push service with its push_wake bytes, in order with the frames around it", () =>
    isolated(Effect.gen(function*() {
      const { binary, binaryConn, registry } = yield* setup
      const p = yield* addPhone(registry, "s")
      const asked: Array<string> = []
      let refusalsRun = 0
      const push: PushWakeShape = {
        request: (source, pushWake) => {
          asked.push(`${source.serverId} ${source.connId} ${Buffer.from(pushWake).toString()} after ${p.conn.sent.length}`)
          return asked.length === 1 ? undefined : Effect.sync(() => void refusalsRun++)
        }
      }
      yield* Effect.forkChild(forwardBinary(binary, registry).pipe(Effect.provideService(PushWake, push)))
      binaryConn.push(
        envelope(p.phone.connId, "1"),
        `{"push_wake":{"platform":"fcm","token":"a"}}`,
        `{"conn_id":"","push_wake":{ "token":"b" }}`,
        `{"conn_id":${JSON.stringify(p.phone.connId)},"frame":2,"push_wake":{"token":"c"}}`
      )
      yield* settle
      assert.deepStrictEqual(asked, [
        `s ${binary.connId} {"platform":"fcm","token":"a"} after 0`,
        `s ${binary.connId} { "token":"b" } after 0`
      ])
      assert.strictEqual(refusalsRun, 1)
      assert.deepStrictEqual(p.conn.sent, ["1", "2"])
      assert.strictEqual(binaryConn.closeCalls.length, 0)
    })))

  it.effect("a binary cannot reach another server-id's phone", () =>
    isolated(Effect.gen(function*() {
      const { binary, binaryConn, registry } = yield* setup
      const otherBinary = binaryHandle("t", yield* makeFakeConnection())
      yield* registry.claim(otherBinary)
      const foreign = yield* addPhone(registry, "t")
      yield* forward(binary, registry)

      binaryConn.push(envelope(foreign.phone.connId, "1"))
      yield* settle
      assert.deepStrictEqual(foreign.conn.sent, [])
      assert.strictEqual(yield* count(Metrics.framesDropped.unknown_conn_id), 1)
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 0)
    })))

  it.effect("an overflowing phone is closed once with 1011 phone backlog full, its drops counted backlog_full", () =>
    isolated(Effect.gen(function*() {
      const { binary, binaryConn, registry } = yield* setup
      const healthy = yield* addPhone(registry, "s")
      const stalled = yield* addPhone(registry, "s", { budget: 200, conn: yield* makeFakeConnection({ writes: "stall" }) })
      yield* forward(binary, registry)
      const big = JSON.stringify("x".repeat(100))

      binaryConn.push(
        envelope(stalled.phone.connId, big), // accepted (102 + 64 of 200), queued until the pass ends
        envelope(stalled.phone.connId, big), // overflow: both dropped
        envelope(stalled.phone.connId, big), // refused: the outbox stopped (backlog full)
        envelope(healthy.phone.connId, "1")
      )
      yield* settle
      assert.deepStrictEqual(stalled.conn.closedWith(), CloseCodes.PhoneBacklogFull)
      assert.strictEqual(stalled.conn.closedWith()?.reason, "phone backlog full")
      assert.strictEqual(stalled.conn.closeCalls.filter((c) => c === CloseCodes.PhoneBacklogFull).length, 1)
      // One routing pass offers before anything is written: nothing reached the stalled socket.
      assert.deepStrictEqual(stalled.conn.sent, [])
      assert.strictEqual(yield* count(Metrics.framesDropped.backlog_full), 3)
      assert.strictEqual(yield* count(Metrics.framesDropped.phone_write_failed), 0)
      assert.deepStrictEqual(healthy.conn.sent, ["1"])
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 1)
      assert.strictEqual(binaryConn.closeCalls.length, 0)
    })))

  it.effect("a close directive with a non-wire code closes the phone 1011 and marks it closed by the binary", () =>
    isolated(Effect.gen(function*() {
      const { binary, binaryConn, registry } = yield* setup
      const p = yield* addPhone(registry, "s")
      yield* forward(binary, registry)

      binaryConn.push(`{"conn_id":${JSON.stringify(p.phone.connId)},"frame":"bye","close_code":1005}`)
      yield* settle
      assert.deepStrictEqual(p.conn.sent, ["\"bye\""])
      assert.deepStrictEqual(p.conn.closeCalls, [{ code: 1011, reason: "" }])
      assert.isTrue(p.phone.closedByBinary)
      assert.strictEqual(binaryConn.closeCalls.length, 0)
    })))

  it.effect("a bare directive refused by a closing outbox drops no frame", () =>
    isolated(Effect.gen(function*() {
      const { binary, binaryConn, registry } = yield* setup
      const p = yield* addPhone(registry, "s", { conn: yield* makeFakeConnection({ writes: "stall" }) })
      yield* forward(binary, registry)

      binaryConn.push(
        `{"conn_id":${JSON.stringify(p.phone.connId)},"frame":1,"close_code":4000}`,
        `{"conn_id":${JSON.stringify(p.phone.connId)},"close_code":4001}`,
        envelope(p.phone.connId, "2")
      )
      yield* settle
      // The second directive carries no frame: refused, but nothing dropped; the frame after it is.
      assert.strictEqual(yield* count(Metrics.framesDropped.unknown_conn_id), 1)
      p.conn.flush()
      yield* settle
      assert.deepStrictEqual(p.conn.closeCalls, [{ code: 4000, reason: "" }])
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 1)
    })))

  it.effect("frames after a directive are refused and counted as dropped", () =>
    isolated(Effect.gen(function*() {
      const { binary, binaryConn, registry } = yield* setup
      const p = yield* addPhone(registry, "s", { conn: yield* makeFakeConnection({ writes: "stall" }) })
      yield* forward(binary, registry)

      binaryConn.push(
        envelope(p.phone.connId, "1"),
        `{"conn_id":${JSON.stringify(p.phone.connId)},"close_code":4000}`,
        envelope(p.phone.connId, "2")
      )
      yield* settle
      assert.deepStrictEqual(p.conn.sent, ["1"])
      assert.strictEqual(p.conn.closeCalls.length, 0) // waits for "1" to be written
      assert.strictEqual(yield* count(Metrics.framesDropped.unknown_conn_id), 1)

      p.conn.flush()
      yield* settle
      assert.deepStrictEqual(p.conn.closeCalls, [{ code: 4000, reason: "" }])
      assert.strictEqual(yield* count(Metrics.framesForwardedBinaryToPhone), 1)
    })))
})

describe("ledger", () => {
  it.effect("the relay-wide budget refuses a phone frame the binary would have to buffer beyond it", () =>
    isolated(Effect.gen(function*() {
      const { binaryConn, registry } = yield* setup
      const { conn, phone } = yield* addPhone(registry, "s")
      conn.push("1")
      const error = yield* Effect.flip(forwardPhone(phone, { registry, ledger: makeBufferLedger(10), binaryBudget: BUDGET }))
      assert.strictEqual(error._tag, "BinaryWriteFailed")
      assert.deepStrictEqual(binaryConn.sent, [])
    })))
})
