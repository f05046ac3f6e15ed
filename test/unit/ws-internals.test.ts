/**
 * The `ws` internals the relay relies on (src/node/WsInternals.ts): checked at startup, and the
 * write path that uses them — the relay's own text frames on `ws`'s socket, between `ws`'s pings
 * and its close frame — read back byte for byte by `ws`'s own parser, with the peer not reading
 * so that everything queues in the socket (backpressure).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { EventEmitter } from "node:events"
import * as Http from "node:http"
import * as Net from "node:net"
import * as Ws from "ws"
import WebSocket, { WebSocketServer } from "ws"
import { makeBufferLedger } from "../../src/connection/BufferLedger.ts"
import * as CloseCodes from "../../src/domain/CloseCodes.ts"
import { makeWsConnection } from "../../src/node/WsConnection.ts"
import { checkWsInternals } from "../../src/node/WsInternals.ts"

describe("checkWsInternals", () => {
  it.effect("passes with the ws version package.json pins", () => checkWsInternals)

  it.effect("fails at startup, naming the ws version, when a field the relay reads is gone", () =>
    Effect.gen(function*() {
      const proto = WebSocket.prototype as unknown as { setSocket: (...args: Array<unknown>) => void }
      const original = proto.setSocket
      proto.setSocket = function(this: { _receiver: unknown }, ...args: Array<unknown>) {
        original.apply(this, args)
        ;(this._receiver as { _bufferedBytes: unknown })._bufferedBytes = undefined
      }
      const error = yield* Effect.flip(Effect.ensuring(checkWsInternals, Effect.sync(() => (proto.setSocket = original))))
      assert.strictEqual(error._tag, "WsInternalsChanged")
      assert.match(error.message, /^ws 8\.\d+\.\d+ is not supported by this relay \(Receiver#_bufferedBytes is not a number\)/)
      yield* checkWsInternals
    }))
})

interface FrameReceiver extends EventEmitter {
  write(chunk: Buffer): boolean
}
/** `ws`'s frame parser: exported at runtime, not declared by @types/ws. */
const { Receiver } = Ws as unknown as {
  Receiver: new(options: { isServer: boolean; skipUTF8Validation: boolean; maxPayload: number }) => FrameReceiver
}

/** A server-side upgraded `ws` socket and a raw TCP client that reads nothing until asked. */
const upgradedPair = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<{ server: Http.Server; ws: WebSocket; client: Net.Socket; received: () => Buffer }>((resolve) => {
      const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false })
      const server = Http.createServer()
      server.on("upgrade", (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => resolve({ server, ws, client, received })))
      const chunks: Array<Buffer> = []
      const received = () => Buffer.concat(chunks)
      let client!: Net.Socket
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as Net.AddressInfo
        client = Net.connect(port, "127.0.0.1", () => {
          client.write(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
          )
        })
        client.on("data", (d: Buffer) => chunks.push(d))
      })
    })
  ),
  ({ client, server, ws }) =>
    Effect.sync(() => {
      ws.terminate()
      client.destroy()
      server.close()
    })
)

describe("the relay's frames, ws's pings and close frame on one socket", () => {
  it.live("arrive in call order, whole, under backpressure, read back by ws's own parser", () =>
    Effect.scoped(Effect.gen(function*() {
      const { client, received, ws } = yield* upgradedPair
      const ledger = makeBufferLedger(1 << 30)
      const conn = yield* makeWsConnection(ws, { closeTimeout: Duration.seconds(30), ledger })
      // Wait for the 101 to reach the client, then stop reading: from here the relay's writes
      // back up in the socket.
      while (!received().includes("\r\n\r\n")) yield* Effect.sleep(5)
      client.pause()

      const expected: Array<string> = []
      const text = (i: number, size: number) => `${i}:${"x".repeat(size)}`
      for (let turn = 0; turn < 120; turn++) {
        // A batch of small and large messages, a ping, then more, in one turn; next turn later.
        const batch = [text(turn * 10, 10), text(turn * 10 + 1, 200_000), text(turn * 10 + 2, 300)]
        assert.isTrue(conn.send(batch))
        expected.push(...batch.map((m) => `m:${m.slice(0, m.indexOf(":"))}`))
        assert.isTrue(conn.sendPing())
        expected.push("ping")
        const parts = [Buffer.from(`{"n":${turn * 10 + 3},"p":"`), Buffer.alloc(20_000, 0x79), Buffer.from(`"}`)]
        assert.isTrue(conn.send([parts]))
        expected.push(`m:{"n":${turn * 10 + 3}`)
        yield* Effect.sleep(1)
      }
      assert.isAbove(conn.pendingBytes(), 4_000_000, "the socket is backed up")
      yield* conn.close(CloseCodes.PhoneBacklogFull)
      expected.push("close:1011:phone backlog full")

      // Now read everything, then parse it as a client would.
      client.resume()
      while (conn.pendingBytes() > 0) yield* Effect.sleep(10)
      yield* Effect.sleep(50)
      const all = received()
      const parser = new Receiver({ isServer: false, skipUTF8Validation: false, maxPayload: 0 })
      const seen: Array<string> = []
      parser.on("message", (data: Buffer, isBinary: boolean) => {
        assert.isFalse(isBinary)
        const s = data.toString()
        seen.push(`m:${s.startsWith("{") ? s.slice(0, s.indexOf(",")) : s.slice(0, s.indexOf(":"))}`)
      })
      parser.on("ping", () => seen.push("ping"))
      parser.on("conclude", (code: number, reason: Buffer) => seen.push(`close:${code}:${reason.toString()}`))
      parser.on("error", (e: Error) => assert.fail(`ws's parser rejected the bytes: ${e.message}`))
      parser.write(all.subarray(all.indexOf("\r\n\r\n") + 4))
      assert.deepStrictEqual(seen, expected)
    })))
})
