/**
 * What one batch of data-plane records (`Wire.Relayed`) asks for once it has been applied: the
 * records are applied synchronously and in order (`RemotePhones`, `RemoteSlots`); counting,
 * flushing the outboxes they filled and closing phones come after, in one effect per batch —
 * no effectful step per frame.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Metrics from "../observability/Metrics.ts"
import type { PhoneHandle } from "../registry/Handles.ts"

export interface RelayReport {
  /** Frames written to a binary here (phone → binary, CLUSTER.md §4: counted by the writer's node). */
  forwarded: number
  forwardedBytes: number
  readonly drops: Map<Metrics.DropReason, number>
  /** Records dropped because they belong to another claim than this node's (§2.7). */
  stale: number
  /** Outboxes that accepted frames: written through once at the end. */
  readonly touched: Set<PhoneHandle>
  readonly effects: Array<Effect.Effect<void>>
}

export const makeReport = (): RelayReport => ({
  forwarded: 0,
  forwardedBytes: 0,
  drops: new Map(),
  stale: 0,
  touched: new Set(),
  effects: []
})

export const dropFrames = (report: RelayReport, reason: Metrics.DropReason, frames: number): void => {
  if (frames > 0) report.drops.set(reason, (report.drops.get(reason) ?? 0) + frames)
}

/** The batch's after-effects, or `undefined` when it asks for none. */
export const finish = (report: RelayReport): Effect.Effect<void> | undefined => {
  if (
    report.forwarded === 0 && report.drops.size === 0 && report.stale === 0 && report.touched.size === 0 &&
    report.effects.length === 0
  ) return undefined
  return Effect.contextWith((context) =>
    Effect.gen(function*() {
      for (const phone of report.touched) if (phone.outbox.flush(context)) yield* phone.outbox.startWriter
      if (report.forwarded > 0) {
        yield* Metric.update(Metrics.framesForwardedPhoneToBinary, report.forwarded)
        yield* Metric.update(Metrics.bytesForwardedPhoneToBinary, report.forwardedBytes)
      }
      for (const [reason, frames] of report.drops) yield* Metric.update(Metrics.framesDropped[reason], frames)
      if (report.stale > 0) yield* Metric.update(Metrics.clusterFramesDropped.stale_epoch, report.stale)
      yield* Effect.all(report.effects, { concurrency: "unbounded", discard: true })
    })
  )
}
