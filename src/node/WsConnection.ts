/**
 * The `ws` adapter: implements the core's `PeerConnection` for one upgraded WebSocket, in three
 * layers of one object — reading (`WsReading`: batches per read, backpressure, message starts),
 * writing (`WsWriting`: text frames, corking, flush tracking) and, here, pings and closing.
 *
 * Closing: `close` starts the handshake at once; a peer that does not answer within the close
 * timeout is destroyed by a fiber in this connection's scope (time from `Clock`). `abort` sheds
 * the connection synchronously. However the socket ends, `onClose` finishes all three layers.
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import WebSocket from "ws"
import { type BufferLedger, untrack } from "../connection/BufferLedger.ts"
import type { CloseInfo, PeerConnection } from "../connection/PeerConnection.ts"
import type { CloseCode } from "../domain/CloseCodes.ts"
import { ConnectionLost } from "../domain/Errors.ts"
import type { GcHint } from "./GcHint.ts"
import { wsInternals } from "./WsInternals.ts"
import { WsWriting } from "./WsWriting.ts"

/**
 * One upgraded socket. A class, not a closure bundle: its methods live once on the prototypes, so
 * an idle connection costs its fields only (10 000 of them are held at once).
 */
class WsConnection extends WsWriting implements PeerConnection {
  private readonly closedSignal = Deferred.makeUnsafe<CloseInfo>()
  private pongWaiters: Set<(ok: boolean) => void> | undefined
  private pongCount = 0
  private closeTimerStarted = false
  private readonly scope: Scope.Scope
  private readonly closeTimeout: Duration.Duration

  constructor(
    ws: WebSocket,
    clock: Clock.Clock,
    ledger: BufferLedger,
    scope: Scope.Scope,
    closeTimeout: Duration.Duration,
    gcHint: GcHint
  ) {
    const { receiver, socket } = wsInternals(ws)
    super(ws, clock, socket, receiver, ledger, gcHint)
    this.scope = scope
    this.closeTimeout = closeTimeout
    // Every listener here, in one constructor: arrows made in each layer's constructor would cost
    // one closure context per layer and connection. `data` runs after ws's own listener.
    socket.on("data", () => this.onData())
    ws.on("message", (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary))
    ws.on("pong", () => {
      this.pongCount++
      this.settlePongs(true)
    })
    ws.on("error", ignore)
    ws.on("close", (code: number) => this.onClose(code))
  }

  // --- pings -----------------------------------------------------------------------------------

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

  // --- closing ---------------------------------------------------------------------------------

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
    this.endReading()
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
    // Gone for writing from here; `onClose` still completes the end.
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
        this.resumeReading()
      }
      if (this.closeTimerStarted) return Effect.void
      this.closeTimerStarted = true
      return Effect.asVoid(Effect.forkIn(Effect.andThen(Effect.sleep(this.closeTimeout), this.terminate), this.scope))
    })
  }

  get closed(): Effect.Effect<CloseInfo> {
    return Deferred.await(this.closedSignal)
  }

  isOpen(): boolean {
    return !this.gone && this.ws.readyState === WebSocket.OPEN
  }
}

const ignore = (): void => {}

const noGcHint: GcHint = { read: () => {} }

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
