/**
 * The `ws` adapter: implements the core's `PeerConnection` for one upgraded WebSocket.
 *
 * Reading: messages go into a queue the forwarder drains in batches; above a high-water mark the
 * socket is paused (TCP backpressure) and resumed once the forwarder caught up.
 * Writing: `send` hands frames to the socket synchronously, corked in runs of up to 64 KiB so
 * a batch leaves in few syscalls; each frame's flush callback advances the progress clock and
 * releases its bytes from the relay-wide ledger.
 * Closing: `close` starts the handshake at once; a peer that does not answer within the close
 * timeout is destroyed by a fiber in this connection's scope (time from `Clock`).
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { isUtf8 } from "node:buffer"
import type * as Net from "node:net"
import WebSocket from "ws"
import type { BufferLedger } from "../connection/BufferLedger.ts"
import type { CloseInfo, PeerConnection } from "../connection/PeerConnection.ts"
import type { CloseCode } from "../domain/CloseCodes.ts"
import { ConnectionLost } from "../domain/Errors.ts"

const READ_HIGH_WATER = 1024 * 1024
const READ_LOW_WATER = 256 * 1024
const CORK_RUN_BYTES = 64 * 1024
const SEND_OPTIONS = { binary: false, compress: false, fin: true } as const

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
    const inbox = yield* Queue.unbounded<string, Cause.Done>()
    const closedSignal = Deferred.makeUnsafe<CloseInfo>()

    let inboxChars = 0
    let paused = false
    let pending = 0
    let lastProgressAt = clock.currentTimeMillisUnsafe()
    let closeStartedByRelay = false
    let gone = false
    const flushWaiters = new Set<(ok: boolean) => void>()
    const pongWaiters = new Set<(ok: boolean) => void>()

    const settle = (waiters: Set<(ok: boolean) => void>, ok: boolean) => {
      if (waiters.size === 0) return
      const all = [...waiters]
      waiters.clear()
      for (const w of all) w(ok)
    }

    // A started message (first fragment or partial frame read) must complete in time (§1.4).
    // ws parses each chunk in its own `data` listener, which runs before this one.
    let messageStartedAt: number | undefined
    const messageInProgress = () =>
      receiver._fragmented !== 0 || receiver._state !== 0 || receiver._bufferedBytes > 0
    socket.on("data", () => {
      if (!messageInProgress()) messageStartedAt = undefined
      else messageStartedAt ??= clock.currentTimeMillisUnsafe()
    })

    ws.on("message", (data: Buffer, isBinary: boolean) => {
      // A binary-opcode message that is not UTF-8 becomes "" (invalid JSON): never altered bytes.
      const text = isBinary && !isUtf8(data) ? "" : data.toString("utf8")
      inboxChars += text.length
      Queue.offerUnsafe(inbox, text)
      if (!paused && inboxChars > READ_HIGH_WATER) {
        paused = true
        ws.pause()
      }
    })
    ws.on("pong", () => settle(pongWaiters, true))
    ws.on("error", () => {})
    ws.on("close", (code: number) => {
      gone = true
      ledger.bytes -= pending
      pending = 0
      settle(flushWaiters, false)
      settle(pongWaiters, false)
      Queue.endUnsafe(inbox)
      Deferred.doneUnsafe(closedSignal, Effect.succeed({ code, byRelay: closeStartedByRelay }))
    })

    const onFlushed = (bytes: number) => (error?: Error | null) => {
      if (gone) return
      pending -= bytes
      ledger.bytes -= bytes
      lastProgressAt = clock.currentTimeMillisUnsafe()
      if (error) settle(flushWaiters, false)
      else if (pending === 0) settle(flushWaiters, true)
    }

    // Writes of one event-loop turn leave in one writev: the socket stays corked until the turn
    // ends (several phones writing to one binary coalesce), and is uncorked early every 64 KiB
    // so flush progress stays visible to the write deadline.
    let corked = false
    let run = 0
    let runBytes = 0
    let runLast: string | undefined
    const endRun = () => {
      if (runLast === undefined) return
      // One flush callback per run: when its last frame is flushed, the whole run is.
      ws.send(runLast, SEND_OPTIONS, onFlushed(runBytes))
      runLast = undefined
      runBytes = 0
    }
    const uncork = () => {
      endRun()
      corked = false
      run = 0
      socket.uncork()
    }

    const send = (texts: ReadonlyArray<string>): boolean => {
      if (gone || ws.readyState !== WebSocket.OPEN) return false
      if (pending === 0) lastProgressAt = clock.currentTimeMillisUnsafe()
      if (!corked) {
        corked = true
        socket.cork()
        queueMicrotask(uncork)
      }
      for (const text of texts) {
        const bytes = Buffer.byteLength(text)
        pending += bytes
        ledger.bytes += bytes
        if (runLast !== undefined) ws.send(runLast, SEND_OPTIONS)
        runLast = text
        runBytes += bytes
        run += bytes
        if (run >= CORK_RUN_BYTES) {
          endRun()
          socket.uncork()
          socket.cork()
          run = 0
        }
      }
      return true
    }

    const flushed: Effect.Effect<void, ConnectionLost> = Effect.suspend(() => {
      if (gone) return Effect.fail(new ConnectionLost())
      if (pending === 0) return Effect.void
      return Effect.callback<void, ConnectionLost>((resume) => {
        const waiter = (ok: boolean) => resume(ok ? Effect.void : Effect.fail(new ConnectionLost()))
        flushWaiters.add(waiter)
        return Effect.sync(() => flushWaiters.delete(waiter))
      })
    })

    const ping: Effect.Effect<void, ConnectionLost> = Effect.callback<void, ConnectionLost>((resume) => {
      if (gone || ws.readyState !== WebSocket.OPEN) return resume(Effect.fail(new ConnectionLost()))
      const waiter = (ok: boolean) => resume(ok ? Effect.void : Effect.fail(new ConnectionLost()))
      pongWaiters.add(waiter)
      ws.ping()
      return Effect.sync(() => pongWaiters.delete(waiter))
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
          if (corked) uncork()
          ws.close(c.code, c.reason)
        }
        if (closeTimerStarted) return Effect.void
        closeTimerStarted = true
        return Effect.asVoid(Effect.forkIn(Effect.andThen(Effect.sleep(options.closeTimeout), terminate), scope))
      })

    const messages = Stream.fromQueue(inbox).pipe(
      Stream.mapArray((batch) => {
        for (const text of batch) inboxChars -= text.length
        if (paused && inboxChars < READ_LOW_WATER) {
          paused = false
          ws.resume()
        }
        return batch
      })
    )

    return {
      messages,
      send,
      flushed,
      pendingBytes: () => pending,
      lastProgressAt: () => lastProgressAt,
      ping,
      close,
      terminate,
      closed: Deferred.await(closedSignal),
      isOpen: () => !gone && ws.readyState === WebSocket.OPEN,
      messageStartedAt: () => messageStartedAt
    } satisfies PeerConnection
  })
