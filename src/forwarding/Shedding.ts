/**
 * The relay-wide memory bound's shedding (SPEC §7.4), as the forwarders see it: a binary as a
 * holder of ledger bytes, and how a shed is reported. The choice of victims is the ledger's
 * (`BufferLedger.makeRoom`); a phone's outbox is its own holder (`Outbox.track`).
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { type BufferLedger, type Holder, type Shed, track } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"

/**
 * A binary's share of the ledger: the envelopes its socket has not flushed. They are already in
 * the socket and cannot be taken back one by one, so shedding a binary aborts its connection
 * (1011 `binary backlog full`, then destroyed) — what the write deadline would do to a binary
 * that stopped reading, only sooner. Its slot enters grace as after any disconnect. Nothing is
 * counted as dropped: those envelopes were counted `phone_to_binary` when the buffer took them.
 */
class BinaryHolder implements Holder {
  private readonly conn: PeerConnection
  readonly fields: Log.LogFields

  constructor(conn: PeerConnection, fields: Log.LogFields) {
    this.conn = conn
    this.fields = fields
  }

  heldBytes(): number {
    return this.conn.pendingBytes()
  }

  shed(): number {
    this.conn.abort(CloseCodes.BinaryBacklogFull)
    return 0
  }
}

/** Tracks a binary's connection in the relay-wide ledger until its socket is gone. */
export const trackBinary = (ledger: BufferLedger, conn: PeerConnection, fields: Log.LogFields): void =>
  track(ledger, conn, new BinaryHolder(conn, fields))

/** Counts the frames the shed connections dropped (`backlog_full`) and logs each shed. */
export const reportShed = (shed: ReadonlyArray<Shed>): Effect.Effect<void> =>
  Effect.suspend(() => {
    let frames = 0
    for (const s of shed) frames += s.frames
    return Effect.andThen(
      Metric.update(Metrics.framesDropped.backlog_full, frames),
      Effect.forEach(shed, (s) => Log.warn("backlog shed", s.fields), { discard: true })
    )
  })
