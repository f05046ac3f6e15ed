/**
 * The write side of one upgraded `ws` socket (the second layer of `WsConnection`). `send` encodes
 * a batch as text frames (`TextFrames`: one packed buffer, large payloads written in place) and
 * writes it to the socket synchronously; the socket stays corked until the current event-loop
 * turn is done (`TurnEnd.atTurnEnd`), so the writes of one turn leave in one writev, and is
 * uncorked early every 64 KiB so flush progress stays visible to the write deadline. Bytes count
 * in the relay-wide ledger until flushed; flushes advance the progress clock.
 */
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Net from "node:net"
import WebSocket from "ws"
import type { BufferLedger } from "../connection/BufferLedger.ts"
import { makeFlushTracker } from "../connection/FlushTracker.ts"
import type { Frame } from "../connection/PeerConnection.ts"
import { ConnectionLost } from "../domain/Errors.ts"
import { encodeTextFrames } from "./TextFrames.ts"
import { atTurnEnd } from "./TurnEnd.ts"
import type { ReceiverState } from "./WsInternals.ts"
import type { GcHint } from "./GcHint.ts"
import { WsReading } from "./WsReading.ts"

const CORK_MAX_BYTES = 64 * 1024

export abstract class WsWriting extends WsReading {
  protected readonly socket: Net.Socket
  protected readonly ledger: BufferLedger
  private readonly tracker = makeFlushTracker()
  /** Clock time of the last flush progress, or of the send that made bytes pending. */
  private progressAt: number
  private corked = false
  private corkedBytes = 0
  /**
   * The socket is gone for writing (closed, or aborted): every unflushed byte was given up, and
   * its later write callbacks (all failures) must not release those bytes a second time.
   */
  protected gone = false

  constructor(
    ws: WebSocket,
    clock: Clock.Clock,
    socket: Net.Socket,
    receiver: ReceiverState,
    ledger: BufferLedger,
    gcHint: GcHint
  ) {
    super(ws, clock, receiver, gcHint)
    this.socket = socket
    this.ledger = ledger
    this.progressAt = clock.currentTimeMillisUnsafe()
  }

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
  protected failWrites(): void {
    this.ledger.bytes -= this.tracker.pending()
    this.tracker.fail()
  }

  /** Uncorks at the end of the turn (`atTurnEnd`), or at once before a close frame. */
  turnEnded(): void {
    this.uncork()
  }

  protected uncork(): void {
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
}
