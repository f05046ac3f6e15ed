/**
 * The relay frames its writes itself (src/node/TextFrames.ts): every size class of the RFC 6455
 * length field, text and byte and part frames, read back by `ws`'s own parser as a client would.
 */
import { assert, describe, it } from "@effect/vitest"
import type { EventEmitter } from "node:events"
import * as Ws from "ws"
import type { Frame } from "../../src/connection/PeerConnection.ts"
import { encodeTextFrames } from "../../src/node/TextFrames.ts"

/** `ws`'s frame parser: exported at runtime, not declared by @types/ws. */
interface FrameReceiver extends EventEmitter {
  write(chunk: Buffer): boolean
}
const { Receiver } = Ws as unknown as {
  Receiver: new(options: { isServer: boolean; skipUTF8Validation: boolean }) => FrameReceiver
}

/** What a `ws` client reads from these bytes: each message's text, and that it was a text message. */
const readBack = (chunks: ReadonlyArray<Buffer>): Array<string> => {
  const wire = Buffer.concat(chunks)
  const receiver = new Receiver({ isServer: false, skipUTF8Validation: false })
  const messages: Array<string> = []
  receiver.on("message", (data: Buffer, isBinary: boolean) => {
    assert.isFalse(isBinary)
    messages.push(data.toString())
  })
  receiver.on("error", (e: Error) => assert.fail(e.message))
  // In odd-sized pieces, as a socket may deliver them.
  for (let at = 0; at < wire.length; at += 7001) receiver.write(wire.subarray(at, at + 7001))
  return messages
}

describe("text frames", () => {
  it("each length class (7-bit, 16-bit, 64-bit) and its edges reads back exactly", () => {
    const texts = [0, 1, 125, 126, 127, 65535, 65536, 70000].map((n) => "x".repeat(n))
    const { chunks, payload } = encodeTextFrames(texts)
    assert.deepStrictEqual(readBack(chunks), texts)
    assert.strictEqual(payload, texts.reduce((n, t) => n + t.length, 0))
    // Header sizes: 2 bytes below 126, 4 below 65536, 10 above.
    assert.strictEqual(Buffer.concat(chunks).length, payload + 2 * 3 + 4 * 3 + 10 * 2)
    // The same sizes as bytes (large ones written in place) read back the same.
    assert.deepStrictEqual(readBack(encodeTextFrames(texts.map((t) => Buffer.from(t))).chunks), texts)
  })

  it("text, bytes and parts are each one message; multi-byte text is counted in bytes", () => {
    const frames: ReadonlyArray<Frame> = [
      "{\"é\":\"🎉\"}",
      Buffer.from("[1,2]"),
      [Buffer.from("{\"conn_id\":\"c\",\"frame\":"), Buffer.from("{\"k\":1}"), Buffer.from("}")]
    ]
    const { chunks, payload } = encodeTextFrames(frames)
    assert.strictEqual(chunks.length, 1) // small: everything packed into one buffer
    assert.deepStrictEqual(readBack(chunks), ["{\"é\":\"🎉\"}", "[1,2]", "{\"conn_id\":\"c\",\"frame\":{\"k\":1}}"])
    assert.strictEqual(payload, Buffer.byteLength("{\"é\":\"🎉\"}") + 5 + 31)
  })

  it("copies small payloads: the caller's buffers may be reused at once", () => {
    const read = Buffer.from("[\"one\"]")
    const { chunks } = encodeTextFrames([read.subarray(0, 7)])
    read.fill(0x20)
    assert.deepStrictEqual(readBack(chunks), ["[\"one\"]"])
  })

  it("writes a large payload in place only if its buffer is at most twice its size", () => {
    const large = Buffer.from(JSON.stringify("x".repeat(40_000)))
    const prefix = Buffer.from("{\"conn_id\":\"c\",\"frame\":")
    const { chunks } = encodeTextFrames(["1", [prefix, large, Buffer.from("}")], "2"])
    // packed header + "1" + header + prefix | the payload itself | "}" + header + "2"
    assert.strictEqual(chunks.length, 3)
    assert.strictEqual(chunks[1], large)
    assert.deepStrictEqual(readBack(chunks), ["1", `{"conn_id":"c","frame":${large.toString()}}`, "2"])

    // The same bytes as a view into a read four times their size: copied, the read is not kept.
    const read = Buffer.alloc(large.length * 4, 0x20)
    large.copy(read, large.length)
    const view = read.subarray(large.length, 2 * large.length)
    const copied = encodeTextFrames([view])
    assert.strictEqual(copied.chunks.length, 1)
    assert.notStrictEqual(copied.chunks[0]!.buffer, read.buffer)
    read.fill(0x20)
    assert.deepStrictEqual(readBack(copied.chunks), [large.toString()])
  })
})
