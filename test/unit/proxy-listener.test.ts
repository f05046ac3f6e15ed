/**
 * The PROXY gate on a real loopback server, with its deadline on `TestClock` (EDGE.md §3): a header
 * that is not complete when the deadline passes is refused exactly then — not a millisecond
 * before — and the server's own connection handling never sees it; a header that completes in
 * time reaches that handling with the client's address, the bytes after it intact.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { TestClock } from "effect/testing"
import * as Net from "node:net"
import { installProxyGate } from "../../src/edge/ProxyListener.ts"
import { proxyV2 } from "../support/ProxyV2.ts"

/** Real time for sockets to move (the test clock does not pass by itself). */
const settle = (ms = 60) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

interface Handed {
  readonly remoteAddress: string | undefined
  readonly firstBytes: Promise<string>
}

/** A server whose own `connection` handling records what it was handed, gated, listening. */
const gatedServer = Effect.gen(function*() {
  const handed: Array<Handed> = []
  const server = Net.createServer()
  server.on("connection", (socket: Net.Socket) => {
    handed.push({
      remoteAddress: socket.remoteAddress,
      firstBytes: new Promise((resolve) => socket.once("data", (d: Buffer) => resolve(d.toString())))
    })
  })
  yield* installProxyGate(server, Duration.seconds(5))
  yield* Effect.acquireRelease(
    Effect.promise(() => new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))),
    () => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
  )
  return { server, handed, port: (server.address() as Net.AddressInfo).port }
})

/** A client connection that records whether the server closed it. */
const client = (port: number) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ socket: Net.Socket; closed: () => boolean }>((resolve) => {
        let closed = false
        const socket = Net.connect({ host: "127.0.0.1", port }, () => resolve({ socket, closed: () => closed }))
        socket.on("error", () => {})
        socket.on("close", () => (closed = true))
      })
    ),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )

describe("installProxyGate", () => {
  it.effect("an incomplete header is refused exactly at the 5 s deadline, never handed on", () =>
    Effect.gen(function*() {
      const { handed, port } = yield* gatedServer
      const peer = yield* client(port)
      peer.socket.write(proxyV2().subarray(0, 20))
      yield* settle()
      yield* TestClock.adjust(Duration.millis(4_999))
      yield* settle()
      assert.isFalse(peer.closed())
      yield* TestClock.adjust(Duration.millis(1))
      yield* settle()
      assert.isTrue(peer.closed())
      assert.strictEqual(handed.length, 0)
    }))

  it.effect("a header completed just before the deadline is handed on with the client's address and the rest of the bytes", () =>
    Effect.gen(function*() {
      const { handed, port } = yield* gatedServer
      const peer = yield* client(port)
      const header = proxyV2({ source: "192.0.2.9" })
      peer.socket.write(header.subarray(0, 10))
      yield* settle()
      yield* TestClock.adjust(Duration.millis(4_999))
      peer.socket.write(Buffer.concat([header.subarray(10), Buffer.from("hello after the header")]))
      yield* settle()
      assert.strictEqual(handed.length, 1)
      assert.strictEqual(handed[0]!.remoteAddress, "192.0.2.9")
      assert.strictEqual(yield* Effect.promise(() => handed[0]!.firstBytes), "hello after the header")
      // The deadline passing later changes nothing for an admitted connection.
      yield* TestClock.adjust(Duration.seconds(10))
      yield* settle()
      assert.isFalse(peer.closed())
    }))

  it.effect("a silent connection does not delay another one's admission", () =>
    Effect.gen(function*() {
      const { handed, port } = yield* gatedServer
      const silent = yield* client(port)
      const talker = yield* client(port)
      talker.socket.write(proxyV2({ source: "198.51.100.3" }))
      yield* settle()
      assert.deepStrictEqual(handed.map((h) => h.remoteAddress), ["198.51.100.3"])
      assert.isFalse(silent.closed())
    }))
})
