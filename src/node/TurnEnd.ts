/**
 * Runs callbacks once at the end of the current event-loop turn, in one `setImmediate` for all of
 * them. The `ws` adapter uncorks its sockets here: every read of a turn's poll phase is forwarded
 * before any socket is uncorked, so the frames of many phones to one binary leave in one writev
 * (a microtask would uncork after each socket's read, one writev per read).
 *
 * Not a timer: nothing here waits for time, only for the current turn's I/O callbacks to finish.
 */
let pending: Array<() => void> = []
let scheduled = false

const runAll = (): void => {
  scheduled = false
  const callbacks = pending
  pending = []
  for (let i = 0; i < callbacks.length; i++) callbacks[i]!()
}

export const atTurnEnd = (callback: () => void): void => {
  pending.push(callback)
  if (scheduled) return
  scheduled = true
  setImmediate(runAll)
}
