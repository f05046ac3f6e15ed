/**
 * The `ws` adapter: implements the core's `PeerConnection` for one upgraded WebSocket.
 *
 * Reading: the messages one socket read delivers are collected and handed to the forwarder as
 * one batch, as their bytes (in the microtask after that I/O callback, `TurnEnd.atReadEnd`);
 * above a high-water mark of unread bytes the socket is paused (TCP backpressure) and resumed once
 * the forwarder caught up.
 * Writing: `send` encodes a batch as text frames (`TextFrames`: one packed buffer, large payloads
 * written in place) and writes it to the socket synchronously; the socket stays corked until the
 * current event-loop turn is done (`TurnEnd.atTurnEnd`), so the writes of one turn leave in one
 * writev, and is uncorked early every 64 KiB so flush progress stays visible to the write deadline.
 * Flushes release bytes from the relay-wide ledger and advance the progress clock.
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
import { type BufferLedger, untrack } from "../connection/BufferLedger.ts"
import { makeFlushTracker } from "../connection/FlushTracker.ts"
import type { CloseInfo, Frame, PeerConnection } from "../connection/PeerConnection.ts"
import type { CloseCode } from "../domain/CloseCodes.ts"
import { ConnectionLost } from "../domain/Errors.ts"
import type { GcHint } from "./GcHint.ts"
import { encodeTextFrames } from "./TextFrames.ts"
import { atReadEnd, atTurnEnd } from "./TurnEnd.ts"
import { messageInProgress, type ReceiverState, wsInternals } from "./WsInternals.ts"

const READ_HIGH_WATER = 1024 * 1024
const READ_LOW_WATER = 256 * 1024
const CORK_MAX_BYTES = 64 * 1024
const EMPTY = Buffer.alloc(0)

/**
 * One upgraded socket. A class, not a closure bundle: its methods live once on the prototype, so
 * an idle connection costs its fields only (10 000 of them are held at once).
 */
class WsConnection implements PeerConnection {
  readonly messages: Stream.Stream<Buffer>
  private readonly socket: Net.Socket
  private readonly receiver: ReceiverState
  private readonly closedSignal = Deferred.makeUnsafe<CloseInfo>()
  private readonly tracker = makeFlushTracker()
  private pongWaiters: Set<(ok: boolean) => void> | undefined
  private progressAt: number
  private closeStartedByRelay = false
  private closeTimerStarted = false
  private gone = false
  private pongCount = 0
  private startedAt: number | undefined
  // reading: arrived messages wait in `ready` until the forwarder pulls them; a forwarder
  // waiting for messages is resumed with the batch directly (no queue).
  private unread = 0
  private paused = false
  private arrived: Array<Buffer> = []
  private ready: Array<Buffer> | undefined
  private waiting: ((batch: Effect.Effect<Arr.NonEmptyReadonlyArray<Buffer>, Cause.Done>) => void) | undefined
  private closedForReading = false
  // writing
  private corked = false
  private corkedBytes = 0

  private readonly ws: WebSocket
  private readonly clock: Clock.Clock
  private readonly ledger: BufferLedger
  private readonly scope: Scope.Scope
  private readonly closeTimeout: Duration.Duration
  private readonly gcHint: GcHint

  constructor(
    ws: WebSocket,
    clock: Clock.Clock,
    ledger: BufferLedger,
    scope: Scope.Scope,
    closeTimeout: Duration.Duration,
    gcHint: GcHint
  ) {
    this.ws = ws
    this.clock = clock
    this.ledger = ledger
    this.scope = scope
    this.closeTimeout = closeTimeout
    this.gcHint = gcHint
    const internals = wsInternals(ws)
    this.socket = internals.socket
    this.receiver = internals.receiver
    this.progressAt = clock.currentTimeMillisUnsafe()
    this.messages = Stream.fromPull(Effect.succeed(this.pull))
    // A started message (first fragment or partial frame read) must complete in time (§1.4); the
    // clock restarts with each message. ws parses each chunk in its own `data` listener, which runs
    // before this one and emits every message the chunk completed (`onMessage` clears `startedAt`),
    // so a chunk that ends inside a message has started a new one unless one was already running.
    this.socket.on("data", () => {
      if (messageInProgress(this.receiver)) this.startedAt ??= this.clock.currentTimeMillisUnsafe()
      else this.startedAt = undefined
    })
    ws.on("message", (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary))
    ws.on("pong", () => {
      this.pongCount++
      this.settlePongs(true)
    })
    ws.on("error", ignore)
    ws.on("close", (code: number) => this.onClose(code))
  }

  // --- reading ---------------------------------------------------------------------------------

  private onMessage(data: Buffer, isBinary: boolean): void {
    this.startedAt = undefined
    this.gcHint.read(data.length)
    // Once the relay started closing, nothing more is forwarded: read on only to see the reply.
    if (this.closeStartedByRelay) return
    // A binary-opcode message that is not UTF-8 becomes empty (invalid JSON): never altered bytes.
    const bytes = isBinary && !isUtf8(data) ? EMPTY : data
    this.unread += bytes.length
    if (this.arrived.length === 0) atReadEnd(this)
    this.arrived.push(bytes)
    if (!this.paused && this.unread > READ_HIGH_WATER) {
      this.paused = true
      this.ws.pause()
    }
  }

  /** The forwarder takes `batch`: its bytes no longer count as unread. */
  private handOver(batch: Arr.NonEmptyArray<Buffer>): Arr.NonEmptyArray<Buffer> {
    for (let i = 0; i < batch.length; i++) this.unread -= batch[i]!.length
    if (this.paused && this.unread < READ_LOW_WATER) {
      this.paused = false
      this.ws.resume()
    }
    return batch
  }

  /** What one socket read delivered, handed over as one batch (a microtask after the read). */
  readEnded(): void {
    const batch = this.arrived
    this.arrived = []
    if (batch.length === 0) return
    const resume = this.waiting
    if (resume !== undefined) {
      this.waiting = undefined
      resume(Effect.succeed(this.handOver(batch as Arr.NonEmptyArray<Buffer>)))
    } else if (this.ready === undefined) this.ready = batch
    else for (let i = 0; i < batch.length; i++) this.ready.push(batch[i]!)
  }

  private readonly pull: Pull.Pull<Arr.NonEmptyReadonlyArray<Buffer>> = Effect.suspend(() => {
    const batch = this.ready
    if (batch !== undefined) {
      this.ready = undefined
      return Effect.succeed(this.handOver(batch as Arr.NonEmptyArray<Buffer>))
    }
    if (this.closedForReading) return Cause.done()
    // No cleanup on interruption: a forwarder interrupted while waiting has ended its session, and
    // a later batch handed to its stale `resume` is ignored by Effect (nobody is left to read it).
    return Effect.callback<Arr.NonEmptyReadonlyArray<Buffer>, Cause.Done>((resume) => {
      this.waiting = resume
    })
  })

  // --- writing ---------------------------------------------------------------------------------

  private flushCallback(bytes: number): (error?: Error | null) => void {
    return (error) => {
      if (this.gone) return
      this.progressAt = this.clock.currentTimeMillisUnsafe()
      if (error) return this.failWrites()
      this.ledger.bytes -= bytes
      this.tracker.flushed(bytes)
    }
  }

  /** Every unflushed byte is given up (released from the ledger) and every waiter told. */
  private failWrites(): void {
    this.ledger.bytes -= this.tracker.pending()
    this.tracker.fail()
  }

  /** Uncorks at the end of the turn (`atTurnEnd`), or at once before a close frame. */
  turnEnded(): void {
    this.uncork()
  }

  private uncork(): void {
    if (!this.corked) return
    this.corked = false
    this.corkedBytes = 0
    this.socket.uncork()
  }

  send(frames: ReadonlyArray<Frame>, whenFlushed?: (ok: boolean) => void): boolean {
    if (this.gone || this.ws.readyState !== WebSocket.OPEN) return false
    if (this.tracker.pending() === 0) this.progressAt = this.clock.currentTimeMillisUnsafe()
    if (!this.corked) {
      this.corked = true
      this.socket.cork()
      atTurnEnd(this)
    }
    // The batch as text frames: one packed buffer (large payloads in place), one flush callback.
    const { chunks, payload } = encodeTextFrames(frames)
    const last = chunks.length - 1
    for (let i = 0; i < last; i++) this.socket.write(chunks[i]!)
    if (last >= 0) this.socket.write(chunks[last]!, this.flushCallback(payload))
    this.ledger.bytes += payload
    this.tracker.sent(payload, whenFlushed)
    // Long turns are uncorked every 64 KiB, so flush progress stays visible to the write deadline.
    this.corkedBytes += payload
    if (this.corkedBytes >= CORK_MAX_BYTES) {
      this.corkedBytes = 0
      this.socket.uncork()
      this.socket.cork()
    }
    return true
  }

  get flushed(): Effect.Effect<void, ConnectionLost> {
    return Effect.suspend(() => {
      if (this.gone) return Effect.fail(new ConnectionLost())
      if (this.tracker.pending() === 0) return Effect.void
      return Effect.callback<void, ConnectionLost>((resume) => {
        this.tracker.sent(0, (ok) => resume(ok ? Effect.void : Effect.fail(new ConnectionLost())))
      })
    })
  }

  pendingBytes(): number {
    return this.tracker.pending()
  }

  lastProgressAt(): number {
    return this.progressAt
  }

  // --- liveness and closing --------------------------------------------------------------------

  private settlePongs(ok: boolean): void {
    const waiters = this.pongWaiters
    if (waiters === undefined) return
    this.pongWaiters = undefined
    for (const waiter of waiters) waiter(ok)
  }

  get ping(): Effect.Effect<void, ConnectionLost> {
    return Effect.callback<void, ConnectionLost>((resume) => {
      if (!this.isOpen()) return resume(Effect.fail(new ConnectionLost()))
      const waiter = (ok: boolean) => resume(ok ? Effect.void : Effect.fail(new ConnectionLost()))
      const waiters = (this.pongWaiters ??= new Set())
      waiters.add(waiter)
      this.ws.ping()
      return Effect.sync(() => {
        waiters.delete(waiter)
      })
    })
  }

  sendPing(): boolean {
    if (!this.isOpen()) return false
    this.ws.ping()
    return true
  }

  pongs(): number {
    return this.pongCount
  }

  /**
   * The socket closed before this connection attached its listeners (between the upgrade's
   * callback and the session's setup): its `close` was emitted to nobody, so it is taken from
   * the socket's state now, or the session would wait for it forever.
   */
  closedBeforeSetUp(): void {
    if (this.ws.readyState === WebSocket.CLOSED) {
      this.onClose((this.ws as unknown as { _closeCode: number })._closeCode)
    }
  }

  private onClose(code: number): void {
    this.gone = true
    untrack(this.ledger, this)
    this.failWrites()
    this.settlePongs(false)
    this.readEnded()
    this.closedForReading = true
    const resume = this.waiting
    this.waiting = undefined
    resume?.(Cause.done())
    Deferred.doneUnsafe(this.closedSignal, Effect.succeed({ code, byRelay: this.closeStartedByRelay }))
  }

  get terminate(): Effect.Effect<void> {
    return Effect.sync(() => {
      if (!this.gone) this.ws.terminate()
    })
  }

  abort(c: CloseCode): void {
    if (this.gone) return
    if (this.ws.readyState === WebSocket.OPEN) {
      this.closeStartedByRelay = true
      this.uncork()
      this.ws.close(c.code, c.reason)
    }
    // Gone for writing from here: the socket's later write callbacks (all failures once it is
    // destroyed) must not release these bytes a second time; `onClose` still completes the end.
    this.gone = true
    this.ws.terminate()
    this.failWrites()
  }

  close(c: CloseCode): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.gone) return Effect.void
      if (this.ws.readyState === WebSocket.OPEN) {
        this.closeStartedByRelay = true
        // Frames already handed to `send` go out before the close frame.
        this.uncork()
        this.ws.close(c.code, c.reason)
        // A socket paused for backpressure must be read again, or the peer's close reply
        // would never be seen and the close would wait out the close timeout.
        if (this.paused) {
          this.paused = false
          this.ws.resume()
        }
      }
      if (this.closeTimerStarted) return Effect.void
      this.closeTimerStarted = true
      return Effect.asVoid(Effect.forkIn(Effect.andThen(Effect.sleep(this.closeTimeout), this.terminate), this.scope))
    })
  }

  get closed(): Effect.Effect<CloseInfo> {
    return Deferred.await(this.closedSignal)
  }

  messageStartedAt(): number | undefined {
    return this.startedAt
  }

  isOpen(): boolean {
    return !this.gone && this.ws.readyState === WebSocket.OPEN
  }
}

const ignore = (): void => {}

const noGcHint: GcHint = { read: ignore }

export const makeWsConnection = (
  ws: WebSocket,
  options: {
    readonly closeTimeout: Duration.Duration
    readonly ledger: BufferLedger
    /** The relay's young-generation hint (`makeGcHint`); none when omitted. */
    readonly gcHint?: GcHint | undefined
  }
): Effect.Effect<PeerConnection, never, Scope.Scope> =>
  Effect.flatMap(Effect.scope, (scope) =>
    Clock.clockWith((clock) =>
      Effect.sync((): PeerConnection => {
        let conn: WsConnection
        try {
          conn = new WsConnection(ws, clock, options.ledger, scope, options.closeTimeout, options.gcHint ?? noGcHint)
        } catch (defect) {
          // A socket the adapter cannot wrap would have no owner: destroyed (the session reports it).
          ws.terminate()
          throw defect
        }
        conn.closedBeforeSetUp()
        return conn
      })
    ))
