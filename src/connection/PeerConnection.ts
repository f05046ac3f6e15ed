/**
 * The small connection interface the core works on (STYLE §3): the core never imports `ws` or
 * `node:http`. `WsConnection` implements it for real sockets; tests implement it in memory.
 */
import type * as Effect from "effect/Effect"
import type * as Stream from "effect/Stream"
import type { CloseCode } from "../domain/CloseCodes.ts"
import type { ConnectionLost } from "../domain/Errors.ts"

/** One message to send: text, its UTF-8 bytes, or those bytes in parts (still one message). */
export type Frame = string | Buffer | ReadonlyArray<Buffer>

export interface CloseInfo {
  /** The close code the peer sent; 1005 when it sent none, 1006 when the socket just dropped. */
  readonly code: number
  /** The relay started the close (eviction, directive, error, shutdown …). */
  readonly byRelay: boolean
}

export interface PeerConnection {
  /**
   * Incoming messages as their UTF-8 bytes, in order, in the batches that arrived together. Ends
   * when the connection closes; never fails. A binary-opcode message that is not UTF-8 arrives
   * empty (invalid JSON to both forwarders) so no byte is ever altered.
   */
  readonly messages: Stream.Stream<Buffer>
  /**
   * Hands `frames` (text, its UTF-8 bytes, or those bytes in parts) to the socket, in order, as
   * one text message each. Synchronous and never blocks; the bytes count in `pendingBytes` until
   * flushed to the OS. Buffers must not change until then: small ones are copied at once, a large
   * one may be written in place, but only if the buffer under it is at most twice its size (so
   * a frame never keeps a much larger read alive). `false` when the socket is no longer open. `onFlushed` is called
   * once, when every one of these frames is flushed (`true`) or the socket failed first (`false`).
   */
  readonly send: (frames: ReadonlyArray<Frame>, onFlushed?: (ok: boolean) => void) => boolean
  /** Succeeds once everything sent so far is flushed; fails if the socket fails or closes first. */
  readonly flushed: Effect.Effect<void, ConnectionLost>
  /** Bytes handed to `send` and not yet flushed. */
  readonly pendingBytes: () => number
  /** Clock time (ms) of the last flush progress, or of the send that made `pendingBytes` non-zero. */
  readonly lastProgressAt: () => number
  /** Sends a WebSocket ping; succeeds on the next pong, fails if the socket closes first. */
  readonly ping: Effect.Effect<void, ConnectionLost>
  /** Sends a WebSocket ping without waiting (the heartbeat polls `pongs`); `false` if not open. */
  readonly sendPing: () => boolean
  /** How many pongs arrived so far. */
  readonly pongs: () => number
  /**
   * Starts the close handshake with this code and reason, at once (not queued behind pending
   * writes). Idempotent: the first close wins. A peer that does not answer within the close
   * timeout is destroyed.
   */
  readonly close: (close: CloseCode) => Effect.Effect<void>
  /** Destroys the socket at once. */
  readonly terminate: Effect.Effect<void>
  /**
   * Sheds the connection (SPEC §7.4): sends this close frame (best effort: behind unflushed bytes
   * it never gets through) and destroys the socket at once. Synchronous: every unflushed byte is
   * given up — released from the ledger, every flush waiter told `false` — before it returns.
   */
  readonly abort: (close: CloseCode) => void
  /** Resolves when the socket is fully gone. */
  readonly closed: Effect.Effect<CloseInfo>
  /** Clock time (ms) the message being received started, or `undefined` between messages. */
  readonly messageStartedAt: () => number | undefined
  /** Whether the socket is still open for writing. */
  readonly isOpen: () => boolean
}
