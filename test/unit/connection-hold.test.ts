/**
 * A connection's handler gives back its cap slot and its drain-list entry on every way out
 * (SPEC §7.2, issue 12 item 6): a refusal, the session's end, a defect in the gate or the
 * session, interruption in either — and holds them while the session runs.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type WebSocket from "ws"
import { makeCaps } from "../../src/limits/ConnectionCaps.ts"
import { ConnectionHold, holding } from "../../src/http/ConnectionHold.ts"

const setup = () => {
  const caps = makeCaps({ maxConnections: 1, maxConnectionsPerIp: 0 })
  const sockets = new Set<WebSocket>()
  const hold = new ConnectionHold(sockets)
  const ws = {} as WebSocket
  /** A gate that takes the slot, upgrades (tracks the socket), then does `then`. */
  const gate = (then: Effect.Effect<Effect.Effect<void>>) =>
    Effect.suspend(() => {
      const admission = caps.tryAcquire("203.0.113.1")
      assert.strictEqual(admission._tag, "Admitted")
      if (admission._tag === "Admitted") hold.admit(admission)
      hold.track(ws)
      return then
    })
  const held = () => ({ slots: caps.active(), sockets: sockets.size })
  return { gate, hold, held }
}

const none = { slots: 0, sockets: 0 }
const one = { slots: 1, sockets: 1 }

describe("holding", () => {
  it.effect("gives everything back after a refusal", () =>
    Effect.gen(function*() {
      const { gate, hold, held } = setup()
      yield* holding(hold, gate(Effect.succeed(Effect.void)))
      assert.deepStrictEqual(held(), none)
    }))

  it.effect("holds the slot while the session runs and gives it back when the session ends", () =>
    Effect.gen(function*() {
      const { gate, hold, held } = setup()
      const end = yield* Deferred.make<void>()
      const running = yield* Effect.forkChild(holding(hold, gate(Effect.succeed(Deferred.await(end)))))
      yield* Effect.yieldNow
      assert.deepStrictEqual(held(), one)
      yield* Deferred.succeed(end, undefined)
      yield* Fiber.join(running)
      assert.deepStrictEqual(held(), none)
    }))

  it.effect("gives everything back when the gate or the session dies", () =>
    Effect.gen(function*() {
      const inGate = setup()
      const gateExit = yield* Effect.exit(holding(inGate.hold, inGate.gate(Effect.die("gate defect"))))
      assert.isTrue(Exit.isFailure(gateExit))
      assert.deepStrictEqual(inGate.held(), none)
      const inSession = setup()
      const sessionExit = yield* Effect.exit(holding(inSession.hold, inSession.gate(Effect.succeed(Effect.die("session defect")))))
      assert.isTrue(Exit.isFailure(sessionExit))
      assert.deepStrictEqual(inSession.held(), none)
    }))

  it.effect("gives everything back when interrupted in the gate or in the session", () =>
    Effect.gen(function*() {
      const inGate = setup()
      const gateFiber = yield* Effect.forkChild(holding(inGate.hold, inGate.gate(Effect.never)))
      yield* Effect.yieldNow
      assert.deepStrictEqual(inGate.held(), one)
      yield* Fiber.interrupt(gateFiber)
      assert.deepStrictEqual(inGate.held(), none)
      const inSession = setup()
      const sessionFiber = yield* Effect.forkChild(holding(inSession.hold, inSession.gate(Effect.succeed(Effect.never))))
      yield* Effect.yieldNow
      assert.deepStrictEqual(inSession.held(), one)
      yield* Fiber.interrupt(sessionFiber)
      assert.deepStrictEqual(inSession.held(), none)
    }))

  it.effect("releases after the session's own finalizers, and only once", () =>
    Effect.gen(function*() {
      const { gate, hold, held } = setup()
      const seen: Array<{ slots: number; sockets: number }> = []
      yield* holding(hold, gate(Effect.succeed(Effect.ensuring(Effect.void, Effect.sync(() => seen.push(held()))))))
      assert.deepStrictEqual(seen, [one])
      hold.release()
      assert.deepStrictEqual(held(), none)
    }))
})
