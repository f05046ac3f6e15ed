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

let turnTasks: Array<TurnEndTask> = []
let turnScheduled = false

const runTurnTasks = (): void => {
  turnScheduled = false
  const tasks = turnTasks
  turnTasks = []
  for (let i = 0; i < tasks.length; i++) tasks[i]!.turnEnded()
}

export const atTurnEnd = (task: TurnEndTask): void => {
  turnTasks.push(task)
  if (turnScheduled) return
  turnScheduled = true
  setImmediate(runTurnTasks)
}

let readTasks: Array<ReadEndTask> = []
let readScheduled = false

const runReadTasks = (): void => {
  readScheduled = false
  const tasks = readTasks
  readTasks = []
  for (let i = 0; i < tasks.length; i++) tasks[i]!.readEnded()
}

export const atReadEnd = (task: ReadEndTask): void => {
  readTasks.push(task)
  if (readScheduled) return
  readScheduled = true
  queueMicrotask(runReadTasks)
}
