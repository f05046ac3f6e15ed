/**
 * The parts of `ws` the relay uses that `ws` does not document: the upgraded socket
 * (`WebSocket#_socket`, which `TextFrames` writes frames on and which is corked and uncorked
 * around them) and the frame parser's progress (`Receiver#_state`, `_fragmented`, `_bufferedBytes`,
 * read by the message deadline). Reached only through `wsInternals`, and checked once at startup
 * by `checkWsInternals`, which exercises them on a socket of its own: a `ws` release that renames
 * or changes them stops the relay at boot with a message naming the version, instead of breaking
 * the write path or the deadline silently.
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { createRequire } from "node:module"
import type * as Net from "node:net"
import { Duplex } from "node:stream"
import WebSocket from "ws"

/** The frame parser's progress: all three are 0 exactly between messages. */
export interface ReceiverState {
  readonly _state: number
  readonly _fragmented: number
  readonly _bufferedBytes: number
}

export interface WsInternals {
  readonly socket: Net.Socket
  readonly receiver: ReceiverState
}

/** The socket and the parser of an upgraded `ws` connection. */
export const wsInternals = (ws: WebSocket): WsInternals => {
  const internal = ws as unknown as { _socket: Net.Socket; _receiver: ReceiverState }
  return { socket: internal._socket, receiver: internal._receiver }
}

/** A message is in progress: a frame partly read, a fragmented message open, or bytes buffered. */
export const messageInProgress = (r: ReceiverState): boolean =>
  r._fragmented !== 0 || r._state !== 0 || r._bufferedBytes > 0

export class WsInternalsChanged extends Schema.TaggedError<WsInternalsChanged>()("WsInternalsChanged", {
  message: Schema.String
}) {}

const wsVersion = (): string => {
  try {
    return (createRequire(import.meta.url)("ws/package.json") as { version: string }).version
  } catch {
    return "unknown"
  }
}

/** A masked client text frame of `payload` (the parser of a server connection requires masks). */
const clientFrame = (payload: string): Buffer => {
  const body = Buffer.from(payload)
  return Buffer.concat([Buffer.from([0x81, 0x80 | body.length, 0, 0, 0, 0]), body])
}

/** What is wrong with `ws`'s internals, or undefined when the relay can use them. */
const findMismatch = (): string | undefined => {
  const socket = new Duplex({ read() {}, write(_chunk, _encoding, done) { done() } })
  const ws = new (WebSocket as unknown as new(address: null, protocols: undefined, options: object) => WebSocket)(
    null,
    undefined,
    {}
  )
  try {
    ;(ws as unknown as { setSocket: (s: Duplex, head: Buffer, options: object) => void }).setSocket(
      socket,
      Buffer.alloc(0),
      { allowSynchronousEvents: true, maxPayload: 1024, skipUTF8Validation: false }
    )
    const { receiver, socket: held } = wsInternals(ws)
    if (held !== (socket as unknown)) return "WebSocket#_socket is not the upgraded socket"
    if (receiver === null || typeof receiver !== "object") return "WebSocket#_receiver is missing"
    for (const field of ["_state", "_fragmented", "_bufferedBytes"] as const) {
      if (typeof receiver[field] !== "number") return `Receiver#${field} is not a number`
    }
    if (messageInProgress(receiver)) return "a fresh Receiver reports a message in progress"
    const messages: Array<string> = []
    ws.on("message", (data: Buffer) => messages.push(data.toString()))
    // Fed to the parser directly, as the socket's `data` listener does: it parses synchronously.
    const parse = (chunk: Buffer) => (receiver as unknown as { write: (b: Buffer) => boolean }).write(chunk)
    const frame = clientFrame("{}")
    parse(frame.subarray(0, 3))
    if (!messageInProgress(receiver)) return "a partly read frame is not seen as a message in progress"
    parse(frame.subarray(3))
    if (messages.length !== 1) return "a complete message is not emitted synchronously"
    if (messageInProgress(receiver)) return "a completed message is still seen as in progress"
    return undefined
  } catch (e) {
    return `setSocket failed (${e instanceof Error ? e.name : "error"})`
  } finally {
    ws.terminate()
    socket.destroy()
  }
}

/** Fails when the `ws` internals the relay relies on are not as expected (checked once, at startup). */
export const checkWsInternals: Effect.Effect<void, WsInternalsChanged> = Effect.suspend(() => {
  const mismatch = findMismatch()
  return mismatch === undefined ? Effect.void : Effect.fail(
    new WsInternalsChanged({
      message: `ws ${wsVersion()} is not supported by this relay (${mismatch}); install the ws version package.json pins`
    })
  )
})
