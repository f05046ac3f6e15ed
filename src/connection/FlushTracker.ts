/**
 * Tracks bytes handed to a socket against bytes flushed to the OS, in order, and calls each
 * send's callback once everything up to its last byte is flushed (or with `false` if the socket
 * failed first). Socket write callbacks fire in write order, so offsets are enough.
 */
export interface FlushTracker {
  /** Bytes sent and not yet flushed. */
  readonly pending: () => number
  readonly sent: (bytes: number, onFlushed?: (ok: boolean) => void) => void
  readonly flushed: (bytes: number) => void
  /** The socket failed or closed: every waiting callback gets `false`, nothing is pending. */
  readonly fail: () => void
}

interface Waiter {
  readonly at: number
  readonly callback: (ok: boolean) => void
}

/** A class so its methods are shared: one tracker per connection, 10 000 connections at once. */
class OffsetFlushTracker implements FlushTracker {
  private sentTotal = 0
  private flushedTotal = 0
  private waiters: Array<Waiter> | undefined
  private head = 0

  pending(): number {
    return this.sentTotal - this.flushedTotal
  }

  sent(bytes: number, onFlushed?: (ok: boolean) => void): void {
    this.sentTotal += bytes
    if (onFlushed !== undefined) (this.waiters ??= []).push({ at: this.sentTotal, callback: onFlushed })
  }

  flushed(bytes: number): void {
    this.flushedTotal += bytes
    // Re-read on every step: a callback may send (push) or fail (reset) re-entrantly.
    for (;;) {
      const waiters = this.waiters
      if (waiters === undefined) return
      if (this.head === waiters.length) {
        this.waiters = undefined
        this.head = 0
        return
      }
      const next = waiters[this.head]!
      if (next.at > this.flushedTotal) return
      this.head++
      next.callback(true)
    }
  }

  fail(): void {
    const failing = this.waiters?.slice(this.head) ?? []
    this.waiters = undefined
    this.head = 0
    this.flushedTotal = this.sentTotal
    for (const waiter of failing) waiter.callback(false)
  }
}

export const makeFlushTracker = (): FlushTracker => new OffsetFlushTracker()
