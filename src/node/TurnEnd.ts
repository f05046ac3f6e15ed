/**
 * Two shared batches the `ws` adapter uses, so a connection needs no closure of its own for them:
 *
 * * **turn end**: connections whose writes are corked are uncorked once, at the end of the current
 *   event-loop turn, in one `setImmediate` for all of them. Every read of the turn's poll phase is
 *   forwarded before any socket is uncorked, so the frames of many phones to one binary leave in
 *   one writev (a microtask would uncork after each socket's read, one writev per read).
 * * **read end**: connections that received messages during the current I/O callback hand them
 *   over as one batch each, in one microtask after that callback.
 *
 * Not timers: nothing here waits for time, only for the current callback or turn to finish.
 */
export interface TurnEndTask {
  /** Runs once at the end of the turn it was scheduled in. */
  readonly turnEnded: () => void
}

export interface ReadEndTask {
  /** Runs once in the microtask after the I/O callback it was scheduled in. */
  readonly readEnded: () => void
}

/** One batch: tasks queued until `schedule` runs them all, in order, once. */
const makeBatch = <T>(schedule: (runAll: () => void) => void, run: (task: T) => void): (task: T) => void => {
  let tasks: Array<T> = []
  let scheduled = false
  const runAll = (): void => {
    scheduled = false
    const due = tasks
    tasks = []
    for (let i = 0; i < due.length; i++) run(due[i]!)
  }
  return (task) => {
    tasks.push(task)
    if (scheduled) return
    scheduled = true
    schedule(runAll)
  }
}

export const atTurnEnd: (task: TurnEndTask) => void = makeBatch<TurnEndTask>(
  (runAll) => setImmediate(runAll),
  (task) => task.turnEnded()
)

export const atReadEnd: (task: ReadEndTask) => void = makeBatch<ReadEndTask>(queueMicrotask, (task) => task.readEnded())
