/**
 * The binary forwarder (SPEC §4.2): one per binary, N sinks. Decodes each envelope (pure) and
 * enqueues its frame on the addressed phone's outbox, which never blocks — so one stalled phone
 * never delays the others, pongs, or the conflict probe. A bad envelope is logged, counted and
 * dropped; nothing here ever ends the binary's connection: the stream ends only with its socket.
 *
 * Typed outcomes decide counters: `route` returns what became of each envelope (`Routed`), and
 * `tally` is the one place that becomes a drop count — exhaustive over `Routed`, so a new outcome
 * must say how it counts to compile. A frame queued on an outbox is counted by that outbox once
 * it is written (or dropped). The drops of a pass are summed per reason and counted after it, one
 * update per reason.
 * Lines the binary's envelopes cause are limited per connection and reason (`PeerWarnings`); the
 * per-phone ones (`phone closed by binary`, `frame dropped`) come once per phone at most, since
 * its outbox is closed by then.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Stream from "effect/Stream"
import type { CloseCode } from "../domain/CloseCodes.ts"
import { isWireCode } from "../domain/CloseCodes.ts"
import { decode } from "../domain/Envelope.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { HELD, makePeerWarnings } from "../observability/PeerWarnings.ts"
import { PushWake, type PushWakeShape } from "../push/PushWake.ts"
import type { BinaryHandle, PhoneHandle } from "../registry/Handles.ts"
import type { RegistryShape } from "../registry/Registry.ts"
import type { OfferResult, StopReason } from "../outbox/Outbox.ts"
import { reportShed } from "./Shedding.ts"

const REFUSED_REASON: Record<StopReason, Metrics.DropReason> = {
  backlog_full: "backlog_full",
  phone_write_failed: "phone_write_failed",
  // The phone is leaving (directive accepted, evicted, or closed): as good as gone.
  closing: "unknown_conn_id"
}

/**
 * What became of one envelope in a routing pass: the decoder's refusals, a wake, no such phone,
 * or what the addressed phone's outbox answered.
 */
type Routed =
  | { readonly _tag: "Malformed" }
  | { readonly _tag: "MissingConnId" }
  | { readonly _tag: "MissingFrame" }
  | { readonly _tag: "Wake" }
  | { readonly _tag: "UnknownConnId" }
  | OfferResult

const UNKNOWN_CONN_ID: Routed = { _tag: "UnknownConnId" }

/** Side effects one batch asks for, performed after the synchronous routing pass. */
interface BatchReport {
  readonly drops: Map<Metrics.DropReason, number>
  readonly events: Array<Effect.Effect<void>>
  readonly overflowed: Array<readonly [PhoneHandle, CloseCode]>
  /** Phones that accepted frames in this pass: their outboxes are flushed once at its end. */
  readonly touched: Set<PhoneHandle>
  /** This binary's line limit: `HELD`, or the `suppressed` count of a line to write now. */
  readonly admit: (reason: string) => number
}

const drop = (report: BatchReport, reason: Metrics.DropReason, frames: number): void => {
  if (frames > 0) report.drops.set(reason, (report.drops.get(reason) ?? 0) + frames)
}

/** The one place an envelope's outcome becomes a count (SPEC §4.2, §8.2). */
const tally = (report: BatchReport, routed: Routed): void => {
  switch (routed._tag) {
    case "Accepted": // counted by the outbox once written
    case "Wake": // not a frame
      return
    case "Malformed":
    case "MissingConnId":
    case "MissingFrame":
      return drop(report, "malformed_envelope", 1)
    case "UnknownConnId":
      return drop(report, "unknown_conn_id", 1)
    case "Refused":
      return drop(report, REFUSED_REASON[routed.reason], routed.frames)
    case "Overflow":
      // This frame and everything the outbox still held.
      return drop(report, "backlog_full", routed.dropped)
    default:
      routed satisfies never
  }
}

/** Log context of this binary's events; built only when one is logged (not per frame). */
const binaryFields = (binary: BinaryHandle) => ({ server_id: binary.serverId, binary_conn_id: binary.connId })

/**
 * Routes one envelope: its frame (a view into `message`) is queued on the addressed phone's
 * outbox. Logs what needs logging; what it returns is counted by `tally`.
 */
const route = (
  binary: BinaryHandle,
  registry: RegistryShape,
  push: PushWakeShape,
  message: Buffer,
  report: BatchReport
): Routed => {
  const decoded = decode(message)
  switch (decoded._tag) {
    case "Malformed":
    case "MissingConnId":
    case "MissingFrame": {
      const reason = decoded._tag === "Malformed" ? "malformed" : decoded._tag === "MissingConnId" ? "missing conn_id" : "missing frame"
      const suppressed = report.admit(reason)
      if (suppressed !== HELD) {
        report.events.push(Log.warn("envelope dropped", { ...binaryFields(binary), reason, suppressed }))
      }
      return decoded
    }
    case "Wake": {
      // Admission is decided here, synchronously; an admitted wake's send runs on its own (PUSH.md §2).
      const refused = push.request(binary, decoded.pushWake, report.admit)
      if (refused !== undefined) report.events.push(refused)
      return decoded
    }
    case "Deliver": {
      const phone = registry.phoneFor(binary.serverId, decoded.connId)
      if (phone === undefined) {
        const suppressed = report.admit("unknown conn_id")
        if (suppressed !== HELD) {
          report.events.push(Log.warn("envelope dropped", {
            ...binaryFields(binary), reason: "unknown conn_id", suppressed
          }))
        }
        return UNKNOWN_CONN_ID
      }
      let code = decoded.closeCode
      if (code !== 0 && !isWireCode(code)) {
        const suppressed = report.admit("close code replaced")
        if (suppressed !== HELD) {
          report.events.push(Log.warn("close code replaced", {
            ...binaryFields(binary), conn_id: phone.connId, close_code: code, suppressed
          }))
        }
        code = 1011
      }
      const result = phone.outbox.offer(decoded.frame, code)
      if (result._tag === "Refused") {
        const suppressed = report.admit("outbox closed")
        if (suppressed !== HELD) {
          report.events.push(Log.warn("envelope dropped", {
            ...binaryFields(binary), conn_id: phone.connId, reason: "outbox closed", suppressed
          }))
        }
        return result
      }
      if (code !== 0) {
        phone.closedByBinary = true
        report.events.push(Log.info("phone closed by binary", { ...binaryFields(binary), conn_id: phone.connId, close_code: code }))
      }
      if (result.shed.length > 0) report.events.push(reportShed(result.shed))
      if (result._tag === "Accepted") report.touched.add(phone)
      if (result._tag === "Overflow") {
        report.overflowed.push([phone, result.close])
        report.events.push(Log.warn("frame dropped", { ...binaryFields(binary), conn_id: phone.connId, reason: "phone backlog full" }))
      }
      return result
    }
  }
}

const routeBatch = (
  binary: BinaryHandle,
  registry: RegistryShape,
  batch: ReadonlyArray<Buffer>,
  context: Context.Context<never>,
  admit: (reason: string) => number
) =>
  Effect.suspend(() => {
    const report: BatchReport = { drops: new Map(), events: [], overflowed: [], touched: new Set(), admit }
    const push = Context.get(context, PushWake)
    for (const message of batch) tally(report, route(binary, registry, push, message, report))
    // Touched outboxes are written through, one write each; those with something that must wait
    // (backpressure, a directive, a failed write) get their writer.
    let waiting: Array<PhoneHandle> | undefined
    for (const phone of report.touched) if (phone.outbox.flush(context)) (waiting ??= []).push(phone)
    if (
      report.drops.size === 0 && report.events.length === 0 && report.overflowed.length === 0 && waiting === undefined
    ) return Effect.void
    return Effect.gen(function*() {
      if (waiting !== undefined) for (const phone of waiting) yield* phone.outbox.startWriter
      // Overflowed phones close once each, all at once; the binary reads on meanwhile.
      yield* Effect.forEach(report.overflowed, ([phone, close]) => phone.conn.close(close), {
        concurrency: "unbounded",
        discard: true
      })
      for (const [reason, frames] of report.drops) yield* Metric.update(Metrics.framesDropped[reason], frames)
      for (const event of report.events) yield* event
    })
  })

/** Runs until the binary's socket ends. */
export const forwardBinary = (binary: BinaryHandle, registry: RegistryShape): Effect.Effect<void> =>
  Effect.contextWith((context: Context.Context<never>) => {
    const clock = Context.get(context, Clock.Clock)
    const warnings = makePeerWarnings()
    const admit = (reason: string) => warnings.admit(reason, clock.currentTimeMillisUnsafe())
    return Stream.runForEachArray(binary.conn.messages, (batch) => routeBatch(binary, registry, batch, context, admit))
  })
