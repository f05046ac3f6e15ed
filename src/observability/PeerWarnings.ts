/**
 * The log-line limit for what a peer's input causes (SPEC §11): per connection (or per admission
 * source) and reason, one line per second; the occurrences in between are only counted, and the
 * next line written for that reason carries them as `suppressed`. Without it one hostile binary
 * writes a ~150-byte warning for every 2-byte `{}` it sends.
 *
 * The window starts at the line written, so lines for one reason are at least a second apart.
 * A held-back occurrence costs a map lookup and an increment: no allocation, no log call. Counts
 * held back when the connection ends are not written (the metrics count every drop).
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"

export const WINDOW_MS = 1_000

/** Returned by `admit` for an occurrence that is only counted. */
export const HELD = -1

export interface PeerWarnings {
  /**
   * One occurrence of `reason` at clock time `now` (ms): `HELD` when a line for it was written
   * less than a second ago (counted), otherwise how many were held back since that line (the
   * caller writes its line now, with that number as `suppressed`).
   */
  readonly admit: (reason: string, now: number) => number
}

interface Window {
  writtenAt: number
  held: number
}

export const makePeerWarnings = (): PeerWarnings => {
  // Made at the first warning: most connections never cause one. Keys are the call sites'
  // constant reasons, so the map stays a handful of entries.
  let windows: Map<string, Window> | undefined
  return {
    admit: (reason, now) => {
      windows ??= new Map()
      const window = windows.get(reason)
      if (window === undefined) {
        windows.set(reason, { writtenAt: now, held: 0 })
        return 0
      }
      const elapsed = now - window.writtenAt
      // A wall clock set back must not silence a reason until it catches up again.
      if (elapsed >= 0 && elapsed < WINDOW_MS) {
        window.held++
        return HELD
      }
      const held = window.held
      window.writtenAt = now
      window.held = 0
      return held
    }
  }
}

/**
 * `line(suppressed)` when `warnings` admits `reason` now (time from `Clock`), nothing otherwise.
 * For call sites off the hot path; a per-message path calls `admit` before building its fields.
 */
export const limited = (
  warnings: PeerWarnings,
  reason: string,
  line: (suppressed: number) => Effect.Effect<void>
): Effect.Effect<void> =>
  Clock.clockWith((clock) => {
    const suppressed = warnings.admit(reason, clock.currentTimeMillisUnsafe())
    return suppressed === HELD ? Effect.void : line(suppressed)
  })
