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

export const makeFlushTracker = (): FlushTracker => {
  let sentTotal = 0
  let flushedTotal = 0
  let waiters: Array<{ readonly at: number; readonly callback: (ok: boolean) => void }> = []
  let head = 0
  return {
    pending: () => sentTotal - flushedTotal,
    sent: (bytes, onFlushed) => {
      sentTotal += bytes
      if (onFlushed !== undefined) waiters.push({ at: sentTotal, callback: onFlushed })
    },
    flushed: (bytes) => {
      flushedTotal += bytes
      while (head < waiters.length && waiters[head]!.at <= flushedTotal) waiters[head++]!.callback(true)
      if (head === waiters.length) {
        waiters = []
        head = 0
      }
    },
    fail: () => {
      const failing = waiters.slice(head)
      waiters = []
      head = 0
      flushedTotal = sentTotal
      for (const waiter of failing) waiter.callback(false)
    }
  }
}
