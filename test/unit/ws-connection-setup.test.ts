/**
 * Setting up the `ws` adapter on a socket that is already gone (SPEC §10: every handler ends). An
 * upgraded socket can close between the upgrade's callback and the session attaching its
 * listeners; its `close` event is then long emitted, and a connection waiting for it would keep
 * its session (and cap slot) forever.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket, { WebSocketServer } from "ws"
import { makeBufferLedger } from "../../src/connection/BufferLedger.ts"
import { makeWsConnection } from "../../src/node/WsConnection.ts"

let wss: WebSocketServer
let url: string

beforeAll(async () => {
  wss = new WebSocketServer({ host: "127.0.0.1", port: 0 })
  await new Promise<void>((resolve) => wss.once("listening", () => resolve()))
  url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`
})
afterAll(async () => {
  await new Promise<void>((resolve) => wss.close(() => resolve()))
})

/** A server-side socket, upgraded, whose peer then went away and whose `close` was emitted already. */
const closedBeforeSetUp = async (end: (client: WebSocket) => void): Promise<WebSocket> => {
  const accepted = new Promise<WebSocket>((resolve) => wss.once("connection", resolve))
  const client = new WebSocket(url)
  client.on("error", () => {})
  const ws = await accepted
  const closed = new Promise<void>((resolve) => ws.once("close", () => resolve()))
  await new Promise<void>((resolve) => client.once("open", () => resolve()))
  end(client)
  await closed
  return ws
}

const closedWithin = (ws: WebSocket, ms: number) =>
  Effect.runPromise(Effect.gen(function*() {
    const scope = yield* Scope.make()
    const conn = yield* Scope.provide(scope)(makeWsConnection(ws, {
      closeTimeout: Duration.seconds(5),
      ledger: makeBufferLedger(1 << 30)
    }))
    const info = yield* Effect.timeoutOption(conn.closed, `${ms} millis`)
    const open = conn.isOpen()
    yield* Scope.close(scope, Exit.void)
    return { info, open }
  }))

describe("a socket that closed before the connection was set up", () => {
  it("dropped (no close frame): the connection is closed at once, 1006", async () => {
    const ws = await closedBeforeSetUp((client) => client.terminate())
    const { info, open } = await closedWithin(ws, 1000)
    expect(Option.getOrUndefined(info)).toEqual({ code: 1006, byRelay: false })
    expect(open).toBe(false)
  })

  it("closed cleanly by the peer: the connection is closed at once with the peer's code", async () => {
    const ws = await closedBeforeSetUp((client) => client.close(4000))
    const { info } = await closedWithin(ws, 1000)
    expect(Option.getOrUndefined(info)).toEqual({ code: 4000, byRelay: false })
  })
})
