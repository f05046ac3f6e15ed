/**
 * Small helpers for unit tests of the core: handles over fake connections, a fresh metric
 * registry and silent logs per test, and a way to let forked fibers run.
 */
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as Scope from "effect/Scope"
import { type BufferLedger, makeBufferLedger } from "../../src/connection/BufferLedger.ts"
import type { PeerConnection } from "../../src/connection/PeerConnection.ts"
import { envelopePrefix } from "../../src/domain/Envelope.ts"
import * as Outbox from "../../src/outbox/Outbox.ts"
import type { BinaryHandle, PhoneHandle } from "../../src/registry/Handles.ts"

/** Runs `effect` with its own metric registry (counters start at 0) and no log output. */
export const isolated = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  effect.pipe(
    Effect.provideService(Metric.MetricRegistry, new Map()),
    Effect.provideService(Logger.CurrentLoggers, new Set())
  )

/** The current count of a counter in the current metric registry. */
export const count = (counter: Metric.Counter<number>): Effect.Effect<number> =>
  Effect.map(Metric.value(counter), (state) => state.count)

/** The current value of a gauge in the current metric registry. */
export const gaugeValue = (gauge: Metric.Gauge<number>): Effect.Effect<number> =>
  Effect.map(Metric.value(gauge), (state) => state.value)

/** Lets every fiber that is ready run until it suspends again (no clock time passes). */
export const settle: Effect.Effect<void> = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

let binaries = 0

export const binaryHandle = (serverId: string, conn: PeerConnection): BinaryHandle => ({
  connId: `server-${serverId}-${(binaries++).toString(16).padStart(8, "0")}`,
  serverId,
  version: "test",
  conn
})

export const bigLedger = (): BufferLedger => makeBufferLedger(Number.MAX_SAFE_INTEGER)

/** The `make` argument of `registerPhone`: a phone handle over `conn` with a fresh outbox. */
export const phoneHandle = (
  conn: PeerConnection,
  options: { readonly budget?: number; readonly ledger?: BufferLedger } = {}
) =>
(connId: string, servedBy: BinaryHandle): PhoneHandle => ({
  connId,
  serverId: servedBy.serverId,
  deviceName: undefined,
  servedBy,
  conn,
  outbox: Outbox.make({
    conn,
    budget: options.budget ?? 4_194_304,
    ledger: options.ledger ?? bigLedger(),
    scope: Scope.makeUnsafe()
  }),
  envelopePrefix: envelopePrefix(connId),
  closedByBinary: false
})
