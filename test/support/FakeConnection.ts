/**
 * An in-memory `PeerConnection` for unit tests. The test pushes incoming batches, chooses how
 * writes behave (`writes`) and whether pings are answered (`answersPings`), and reads back what
 * the core did (`sent`, `closeCalls`, `terminated`, `pings`). Time comes from the Effect `Clock`
 * captured at construction, so `TestClock` drives `lastProgressAt`.
 *
 * Simplification: a close resolves `closed` at once (the peer answers the close handshake
 * instantly) unless `answersClose` is false (then only `terminate` or `peerClose` ends it); flush
 * waiters and ping waiters fail with `ConnectionLost`, as in the ws adapter.
 */
import { makeFlushTracker } from "../../src/connection/FlushTracker.ts"
import type * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import { type BufferLedger, untrack } from "../../src/connection/BufferLedger.ts"
import type { CloseInfo, PeerConnection } from "../../src/connection/PeerConnection.ts"
import type { CloseCode } from "../../src/domain/CloseCodes.ts"
import { ConnectionLost } from "../../src/domain/Errors.ts"

/**
 * `flush`: every send is flushed at once. `stall`: bytes stay pending until `flush()`.
 * `fail`: `send` returns `false`, as for a socket that is no longer open. `throw`: `send` throws
 * (a defect in the adapter: what a session must survive without leaking its connection).
 */
export type WriteMode = "flush" | "stall" | "fail" | "throw"

export interface FakeConnection extends PeerConnection {
  writes: WriteMode
  answersPings: boolean
  /** Frames accepted by `send`, as text, in order (flushed or still pending). */
  readonly sent: Array<string>
  /** Every call to `close`, including ignored repeats. */
  readonly closeCalls: Array<CloseCode>
  /** The close that took effect (the first one), if any. */
  readonly closedWith: () => CloseCode | undefined
  readonly terminated: () => boolean
  readonly pings: () => number
  /** Delivers one batch of incoming messages. */
  readonly push: (...texts: ReadonlyArray<string>) => void
  /** Flushes `bytes` of the pending bytes (all by default), stamping progress. */
  readonly flush: (bytes?: number) => void
  /** The peer ends the connection with `code` (1005: no code, 1006: dropped). */
  readonly peerClose: (code?: number) => void
  /** The peer sent the first bytes of a message (stamped from the Effect Clock) / completed it. */
  readonly beginMessage: () => void
  readonly endMessage: () => void
}

const byteLength = (text: string): number => Buffer.byteLength(text)

export const makeFakeConnection = (options: {
  readonly writes?: WriteMode
  readonly answersPings?: boolean
  /** `false`: a peer that never answers our close frame (the fake has no close timer of its own). */
  readonly answersClose?: boolean
  /** When given, pending bytes are counted here like the ws adapter does. */
  readonly ledger?: BufferLedger
} = {}): Effect.Effect<FakeConnection> =>
  Effect.gen(function*() {
    const clock = yield* Clock.Clock
    const inbox = yield* Queue.unbounded<Buffer, Cause.Done>()
    const closedSignal = Deferred.makeUnsafe<CloseInfo>()
    const ledger = options.ledger
    const flushWaiters = new Set<(ok: boolean) => void>()
    const pongWaiters = new Set<(ok: boolean) => void>()
    const sent: Array<string> = []
    const closeCalls: Array<CloseCode> = []
    let closedWith: CloseCode | undefined
    let terminated = false
    let gone = false
    let pending = 0
    let pings = 0
    let lastProgressAt = clock.currentTimeMillisUnsafe()
    const tracker = makeFlushTracker()
    let messageStartedAt: number | undefined
    let pongs = 0

    const settle = (waiters: Set<(ok: boolean) => void>, ok: boolean) => {
      const all = [...waiters]
      waiters.clear()
      for (const waiter of all) waiter(ok)
    }

    const end = (info: CloseInfo) => {
      if (gone) return
      gone = true
      if (ledger !== undefined) {
        ledger.bytes -= pending
        untrack(ledger, fake)
      }
      pending = 0
      tracker.fail()
      settle(flushWaiters, false)
      settle(pongWaiters, false)
      Queue.endUnsafe(inbox)
      Deferred.doneUnsafe(closedSignal, Effect.succeed(info))
    }

    const flush = (bytes?: number) => {
      if (gone) return
      const n = Math.min(bytes ?? pending, pending)
      pending -= n
      if (ledger !== undefined) ledger.bytes -= n
      lastProgressAt = clock.currentTimeMillisUnsafe()
      tracker.flushed(n)
      if (pending === 0) settle(flushWaiters, true)
    }

    const fake: FakeConnection = {
      writes: options.writes ?? "flush",
      answersPings: options.answersPings ?? true,
      sent,
      closeCalls,
      closedWith: () => closedWith,
      terminated: () => terminated,
      pings: () => pings,
      push: (...texts) => {
        if (!gone) Queue.offerAllUnsafe(inbox, texts.map((text) => Buffer.from(text)))
      },
      flush,
      peerClose: (code = 1005) => end({ code, byRelay: false }),
      beginMessage: () => {
        messageStartedAt = clock.currentTimeMillisUnsafe()
      },
      endMessage: () => {
        messageStartedAt = undefined
      },

      messages: Stream.fromQueue(inbox),
      send: (frames, onFlushed) => {
        if (fake.writes === "throw") throw new Error("send threw (test)")
        if (gone || closedWith !== undefined || fake.writes === "fail") return false
        if (pending === 0) lastProgressAt = clock.currentTimeMillisUnsafe()
        let bytes = 0
        for (const frame of frames) {
          // Copied now, as the real connection does: the caller may reuse its buffers.
          const text = typeof frame === "string" || Buffer.isBuffer(frame) ? frame.toString() : Buffer.concat(frame).toString()
          sent.push(text)
          bytes += byteLength(text)
        }
        pending += bytes
        if (ledger !== undefined) ledger.bytes += bytes
        tracker.sent(bytes, onFlushed)
        if (fake.writes === "flush") flush()
        return true
      },
      flushed: Effect.suspend(() => {
        if (gone) return Effect.fail(new ConnectionLost())
        if (pending === 0) return Effect.void
        return Effect.callback<void, ConnectionLost>((resume) => {
          const waiter = (ok: boolean) => resume(ok ? Effect.void : Effect.fail(new ConnectionLost()))
          flushWaiters.add(waiter)
          return Effect.sync(() => flushWaiters.delete(waiter))
        })
      }),
      pendingBytes: () => pending,
      lastProgressAt: () => lastProgressAt,
      ping: Effect.callback<void, ConnectionLost>((resume) => {
        pings++
        if (gone) return resume(Effect.fail(new ConnectionLost()))
        if (fake.answersPings) return resume(Effect.void)
        const waiter = (ok: boolean) => resume(ok ? Effect.void : Effect.fail(new ConnectionLost()))
        pongWaiters.add(waiter)
        return Effect.sync(() => pongWaiters.delete(waiter))
      }),
      close: (close) =>
        Effect.sync(() => {
          closeCalls.push(close)
          if (gone) return
          if (closedWith !== undefined) return
          closedWith = close
          if (options.answersClose !== false) end({ code: close.code, byRelay: true })
        }),
      abort: (close) => {
        closeCalls.push(close)
        if (gone) return
        closedWith = close
        terminated = true
        end({ code: close.code, byRelay: true })
      },
      terminate: Effect.sync(() => {
        terminated = true
        end({ code: 1006, byRelay: closedWith !== undefined })
      }),
      closed: Deferred.await(closedSignal),
      messageStartedAt: () => messageStartedAt,
      sendPing: () => {
        pings++
        if (gone) return false
        if (fake.answersPings) pongs++
        return true
      },
      pongs: () => pongs,
      isOpen: () => !gone && closedWith === undefined
    }
    return fake
  })
