/**
 * The `ws` adapter: implements the core's `PeerConnection` for one upgraded WebSocket.
 *
 * Reading: the messages one socket read delivers are collected and handed to the forwarder as
 * one batch (a microtask later); above a high-water mark of unread text the socket is paused
 * (TCP backpressure) and resumed once the forwarder caught up.
 * Writing: `send` hands frames to the socket synchronously; the socket stays corked until the
 * current event-loop turn is done (`TurnEnd`), so the writes of one turn leave in one writev, and is uncorked
 * early every 64 KiB so flush progress stays visible to the write deadline. Flushes release bytes
 * from the relay-wide ledger and advance the progress clock.
 * Closing: `close` starts the handshake at once; a peer that does not answer within the close
 * timeout is destroyed by a fiber in this connection's scope (time from `Clock`).
 */
import type * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Pull from "effect/Pull"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { isUtf8 } from "node:buffer"
import type * as Net from "node:net"
import WebSocket from "ws"
import type { BufferLedger } from "../connection/BufferLedger.ts"
import { makeFlushTracker } from "../connection/FlushTracker.ts"
import type { CloseInfo, PeerConnection } from "../connection/PeerConnection.ts"
import type { CloseCode } from "../domain/CloseCodes.ts"
import { ConnectionLost } from "../domain/Errors.ts"
import { atTurnEnd } from "./TurnEnd.ts"

const READ_HIGH_WATER = 1024 * 1024
const READ_LOW_WATER = 256 * 1024
const CORK_RUN_BYTES = 64 * 1024
const SEND_OPTIONS = { binary: false, compress: false, fin: true } as const
const EMPTY = Buffer.alloc(0)
const byteLength = (frame: string | Buffer): number => (typeof frame === "string" ? Buffer.byteLength(frame) : frame.length)

/** The parts of `ws`'s receiver the message deadline reads. */
interface ReceiverState {
  readonly _state: number
  readonly _fragmented: number
  readonly _bufferedBytes: number
}

export const makeWsConnection = (
  ws: WebSocket,
  options: { readonly closeTimeout: Duration.Duration; readonly ledger: BufferLedger }
): Effect.Effect<PeerConnection, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const clock = yield* Clock.Clock
    const { ledger } = options
    const socket = (ws as unknown as { _socket: Net.Socket })._socket
    const receiver = (ws as unknown as { _receiver: ReceiverState })._receiver
    const closedSignal = Deferred.makeUnsafe<CloseInfo>()
    const tracker = makeFlushTracker()

    let lastProgressAt = clock.currentTimeMillisUnsafe()
    let closeStartedByRelay = false
    let gone = false
    const pongWaiters = new Set<(ok: boolean) => void>()
    const settlePongs = (ok: boolean) => {
      const all = [...pongWaiters]
      pongWaiters.clear()
      for (const waiter of all) waiter(ok)
    }

    // --- reading -------------------------------------------------------------------------------

    // A started message (first fragment or partial frame read) must complete in time (§1.4).
    // ws parses each chunk in its own `data` listener, which runs before this one.
    let messageStartedAt: number | undefined
    const messageInProgress = () =>
      receiver._fragmented !== 0 || receiver._state !== 0 || receiver._bufferedBytes > 0
    socket.on("data", () => {
      if (!messageInProgress()) messageStartedAt = undefined
      else messageStartedAt ??= clock.currentTimeMillisUnsafe()
    })

    // Arrived messages wait in `ready` until the forwarder pulls them; a forwarder waiting for
    // messages is resumed with the batch directly. No queue: one array and one resume.
    let unread = 0
    let paused = false
    let arrived: Array<Buffer> = []
    let ready: Array<Buffer> | undefined
    let waiting: ((batch: Effect.Effect<Arr.NonEmptyReadonlyArray<Buffer>, Cause.Done>) => void) | undefined
    let readEnded = false
    /** The forwarder takes `batch`: its bytes no longer count as unread. */
    const handOver = (batch: Arr.NonEmptyArray<Buffer>): Arr.NonEmptyArray<Buffer> => {
      for (let i = 0; i < batch.length; i++) unread -= batch[i]!.length
      if (paused && unread < READ_LOW_WATER) {
        paused = false
        ws.resume()
      }
      return batch
    }
    const deliver = () => {
      const batch = arrived
      arrived = []
      if (batch.length === 0) return
      if (waiting !== undefined) {
        const resume = waiting
        waiting = undefined
        resume(Effect.succeed(handOver(batch as Arr.NonEmptyArray<Buffer>)))
      } else if (ready === undefined) ready = batch
      else for (let i = 0; i < batch.length; i++) ready.push(batch[i]!)
    }
    const endReading = () => {
      readEnded = true
      const resume = waiting
      waiting = undefined
      resume?.(Cause.done())
    }
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      // Once the relay started closing, nothing more is forwarded: read on only to see the reply.
      if (closeStartedByRelay) return
      // A binary-opcode message that is not UTF-8 becomes empty (invalid JSON): never altered bytes.
      const bytes = isBinary && !isUtf8(data) ? EMPTY : data
      unread += bytes.length
      if (arrived.length === 0) queueMicrotask(deliver)
      arrived.push(bytes)
      if (!paused && unread > READ_HIGH_WATER) {
        paused = true
        ws.pause()
      }
    })

    const stopWaiting = Effect.sync(() => {
      waiting = undefined
    })
    const pull: Pull.Pull<Arr.NonEmptyReadonlyArray<Buffer>> = Effect.suspend(() => {
      if (ready !== undefined) {
        const batch = ready as Arr.NonEmptyArray<Buffer>
        ready = undefined
        return Effect.succeed(handOver(batch))
      }
      if (readEnded) return Cause.done()
      return Effect.callback<Arr.NonEmptyReadonlyArray<Buffer>, Cause.Done>((resume) => {
        waiting = resume
        return stopWaiting
      })
    })
    const messages: Stream.Stream<Buffer> = Stream.fromPull(Effect.succeed(pull))

    // --- writing -------------------------------------------------------------------------------

    const onFlushed = (bytes: number) => (error?: Error | null) => {
      if (gone) return
      lastProgressAt = clock.currentTimeMillisUnsafe()
      if (error) return failWrites()
      ledger.bytes -= bytes
      tracker.flushed(bytes)
    }
    /** Every unflushed byte is given up (released from the ledger) and every waiter told. */
    const failWrites = () => {
      ledger.bytes -= tracker.pending()
      tracker.fail()
    }

    let corked = false
    let run = 0
    let runBytes = 0
    let runLast: string | Buffer | undefined
    /** One flush callback per run: when its last frame is flushed, the whole run is. */
    const endRun = () => {
      if (runLast === undefined) return
      ws.send(runLast, SEND_OPTIONS, onFlushed(runBytes))
      runLast = undefined
      runBytes = 0
    }
    const uncork = () => {
      if (!corked) return
      endRun()
      corked = false
      run = 0
      socket.uncork()
    }

    const send = (frames: ReadonlyArray<string | Buffer>, whenFlushed?: (ok: boolean) => void, total?: number): boolean => {
      if (gone || ws.readyState !== WebSocket.OPEN) return false
      if (tracker.pending() === 0) lastProgressAt = clock.currentTimeMillisUnsafe()
      if (!corked) {
        corked = true
        socket.cork()
        atTurnEnd(uncork)
      }
      // The caller usually knows the byte total; per-frame sizes matter only for long runs.
      const sized = total === undefined || total >= CORK_RUN_BYTES
      let bytes = 0
      for (let i = 0; i < frames.length; i++) {
        const frame = frames[i]!
        const size = sized ? byteLength(frame) : 0
        bytes += size
        if (runLast !== undefined) ws.send(runLast, SEND_OPTIONS)
        runLast = frame
        runBytes += size
        run += size
        if (run >= CORK_RUN_BYTES) {
          endRun()
          socket.uncork()
          socket.cork()
          run = 0
        }
      }
      if (!sized) {
        bytes = total
        runBytes += total
        run += total
      }
      ledger.bytes += bytes
      tracker.sent(bytes, whenFlushed)
      return true
    }

    const flushed: Effect.Effect<void, ConnectionLost> = Effect.suspend(() => {
      if (gone) return Effect.fail(new ConnectionLost())
      if (tracker.pending() === 0) return Effect.void
      return Effect.callback<void, ConnectionLost>((resume) => {
        tracker.sent(0, (ok) => resume(ok ? Effect.void : Effect.fail(new ConnectionLost())))
      })
    })

    // --- liveness and closing ------------------------------------------------------------------

    const ping: Effect.Effect<void, ConnectionLost> = Effect.callback<void, ConnectionLost>((resume) => {
      if (gone || ws.readyState !== WebSocket.OPEN) return resume(Effect.fail(new ConnectionLost()))
      const waiter = (ok: boolean) => resume(ok ? Effect.void : Effect.fail(new ConnectionLost()))
      pongWaiters.add(waiter)
      ws.ping()
      return Effect.sync(() => pongWaiters.delete(waiter))
    })
    let pongs = 0
    ws.on("pong", () => {
      pongs++
      settlePongs(true)
    })
    const sendPing = (): boolean => {
      if (gone || ws.readyState !== WebSocket.OPEN) return false
      ws.ping()
      return true
    }
    ws.on("error", () => {})
    ws.on("close", (code: number) => {
      gone = true
      failWrites()
      settlePongs(false)
      deliver()
      endReading()
      Deferred.doneUnsafe(closedSignal, Effect.succeed({ code, byRelay: closeStartedByRelay }))
    })

    const terminate = Effect.sync(() => {
      if (!gone) ws.terminate()
    })

    let closeTimerStarted = false
    const close = (c: CloseCode): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (gone) return Effect.void
        if (ws.readyState === WebSocket.OPEN) {
          closeStartedByRelay = true
          // Frames already handed to `send` go out before the close frame.
          uncork()
          ws.close(c.code, c.reason)
          // A socket paused for backpressure must be read again, or the peer's close reply
          // would never be seen and the close would wait out the close timeout.
          if (paused) {
            paused = false
            ws.resume()
          }
        }
        if (closeTimerStarted) return Effect.void
        closeTimerStarted = true
        return Effect.asVoid(Effect.forkIn(Effect.andThen(Effect.sleep(options.closeTimeout), terminate), scope))
      })

    return {
      messages,
      send,
      flushed,
      pendingBytes: tracker.pending,
      lastProgressAt: () => lastProgressAt,
      ping,
      sendPing,
      pongs: () => pongs,
      close,
      terminate,
      closed: Deferred.await(closedSignal),
      messageStartedAt: () => messageStartedAt,
      isOpen: () => !gone && ws.readyState === WebSocket.OPEN
    } satisfies PeerConnection
  })
