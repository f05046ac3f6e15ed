/**
 * The read side of one upgraded `ws` socket (the first layer of `WsConnection`). The messages one
 * socket read delivers are collected and handed to the forwarder as one batch, as their bytes, in
 * the microtask after that I/O callback (`TurnEnd.atReadEnd`); a forwarder waiting for messages is
 * resumed with the batch directly (no queue). Above a high-water mark of unread bytes the socket
 * is paused (TCP backpressure) and resumed once the forwarder caught up.
 *
 * It also stamps when a message started (first fragment or partial frame read, from `Clock`), for
 * the message deadline the `ConnectionWatcher` enforces (SPEC §1.4).
 */
import type * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Pull from "effect/Pull"
import * as Stream from "effect/Stream"
import { isUtf8 } from "node:buffer"
import type WebSocket from "ws"
import type { GcHint } from "./GcHint.ts"
import { atReadEnd } from "./TurnEnd.ts"
import { messageInProgress, type ReceiverState } from "./WsInternals.ts"

const READ_HIGH_WATER = 1024 * 1024
const READ_LOW_WATER = 256 * 1024
const EMPTY = Buffer.alloc(0)

/**
 * A class, and the base of `WsConnection`'s: one object per connection whose methods live once on
 * the prototypes, so an idle connection costs its fields only (10 000 of them are held at once).
 */
export abstract class WsReading {
  readonly messages: Stream.Stream<Buffer>
  protected readonly ws: WebSocket
  protected readonly clock: Clock.Clock
  private readonly receiver: ReceiverState
  /** Clock time the message being received started; `undefined` between messages. */
  private startedAt: number | undefined
  /** Once the relay started closing, nothing more is forwarded: read on only to see the reply. */
  protected closeStartedByRelay = false
  // Arrived messages wait in `ready` until the forwarder pulls them.
  private unread = 0
  private paused = false
  private arrived: Array<Buffer> = []
  private ready: Array<Buffer> | undefined
  private waiting: ((batch: Effect.Effect<Arr.NonEmptyReadonlyArray<Buffer>, Cause.Done>) => void) | undefined
  private closedForReading = false
  /** The relay's young-generation hint: it counts the bytes read (`GcHint`). */
  private readonly gcHint: GcHint

  /** The socket's listeners are attached by `WsConnection`, all in one closure (`onData`, `onMessage`). */
  constructor(ws: WebSocket, clock: Clock.Clock, receiver: ReceiverState, gcHint: GcHint) {
    this.ws = ws
    this.clock = clock
    this.receiver = receiver
    this.gcHint = gcHint
    this.messages = Stream.fromPull(Effect.succeed(this.pull))
  }

  /**
   * A socket `data` event, after `ws` parsed the chunk. A started message (first fragment or
   * partial frame read) must complete in time (§1.4); the clock restarts with each message. ws
   * parses each chunk in its own `data` listener, which runs before this one and emits every
   * message the chunk completed (`onMessage` clears `startedAt`), so a chunk that ends inside a
   * message has started a new one unless one was already running.
   */
  protected onData(): void {
    if (messageInProgress(this.receiver)) this.startedAt ??= this.clock.currentTimeMillisUnsafe()
    else this.startedAt = undefined
  }

  protected onMessage(data: Buffer, isBinary: boolean): void {
    this.startedAt = undefined
    this.gcHint.read(data.length)
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

  /**
   * The relay is closing: a socket paused for backpressure must be read again, or the peer's close
   * reply would never be seen and the close would wait out the close timeout.
   */
  protected resumeReading(): void {
    if (!this.paused) return
    this.paused = false
    this.ws.resume()
  }

  /** The socket is gone: what arrived is handed over, then the messages end. */
  protected endReading(): void {
    this.readEnded()
    this.closedForReading = true
    const resume = this.waiting
    this.waiting = undefined
    resume?.(Cause.done())
  }

  messageStartedAt(): number | undefined {
    return this.startedAt
  }
}
