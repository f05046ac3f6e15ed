/**
 * One binary's whole life after its upgrade (SPEC §1.2, §3): claim the server-id — first claim
 * wins, a slot in grace is reclaimed, a live incumbent is probed and either kept (newcomer 4409)
 * or taken over; a newcomer that leaves during the probe takes nothing — then forward its
 * envelopes until the socket is gone. The claim is a scoped resource whose release puts the slot
 * into grace if this connection still holds it.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import { Ledger } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import { RelayConfig } from "../config/RelayConfig.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { binaryConnId } from "../domain/ConnId.ts"
import { forwardBinary } from "../forwarding/BinaryForwarder.ts"
import { trackBinary } from "../forwarding/Shedding.ts"
import { probe } from "../liveness/ConflictProbe.ts"
import { ConnectionWatcher, watchOptions } from "../liveness/ConnectionWatcher.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { BinaryHandle } from "../registry/Handles.ts"
import { type ClaimResult, Registry, type RegistryShape } from "../registry/Registry.ts"
import { Availability } from "../lifecycle/Availability.ts"
import { Lifecycle } from "../lifecycle/Lifecycle.ts"
import { endConnection, guardTeardown, type SessionLabel } from "./SessionEnd.ts"

export interface BinaryInfo {
  readonly serverId: string
  readonly version: string
}

/**
 * `gone`: the newcomer left before it could hold the slot (nothing to answer, nothing counted).
 * `unavailable` (cluster mode): the shared registry did not answer; the newcomer is closed 1013.
 */
type ClaimOutcome = "holder" | "rejected" | "draining" | "gone" | "unavailable"

type ProbeAnswer = "alive" | "dead" | "draining" | "gone"

/**
 * The conflict probe (SPEC §3.3), interruptible and raced against the drain and against the
 * newcomer leaving: a newcomer that is gone stops waiting at once.
 */
const probeIncumbent = Effect.fnUntraced(function*(newcomer: PeerConnection, incumbent: BinaryHandle) {
  const config = yield* RelayConfig
  const lifecycle = yield* Lifecycle
  return yield* Effect.raceFirst(
    Effect.raceFirst(
      Effect.map(probe(incumbent.conn, config.probeTimeout), (alive): ProbeAnswer => (alive ? "alive" : "dead")),
      Effect.as(lifecycle.draining, "draining" as const)
    ),
    Effect.as(newcomer.closed, "gone" as const)
  )
})

/** The holder's release: its connection is finished first (the grace starts once it is gone). */
const leaveSlot = (
  registry: RegistryShape,
  binary: BinaryHandle,
  label: SessionLabel,
  exit: Exit.Exit<unknown, unknown>,
  closeTimeout: Duration.Duration
): Effect.Effect<void> =>
  guardTeardown(
    label,
    Effect.ensuring(endConnection(binary.conn, label, exit, closeTimeout), registry.release(binary))
  )

/**
 * A live incumbent holds the slot (SPEC §3.3): probe it, then keep it (the newcomer is rejected)
 * or take over. The probe is interruptible and runs outside any acquisition; the takeover holds
 * the slot and arms its release in one step, and checks in that same step that the newcomer is
 * still open, so a newcomer that left during the probe never takes the slot.
 */
const resolveConflict = Effect.fnUntraced(function*(binary: BinaryHandle, incumbent: BinaryHandle, label: SessionLabel) {
  const registry = yield* Registry
  const config = yield* RelayConfig
  yield* Log.info("server id conflict", { server_id: binary.serverId, binary_conn_id: binary.connId })
  const answer = yield* probeIncumbent(binary.conn, incumbent)
  if (answer === "alive") return "rejected" satisfies ClaimOutcome
  if (answer !== "dead") return answer satisfies ClaimOutcome
  const takeover = yield* Effect.acquireRelease(
    registry.takeover(binary, incumbent),
    (result, exit) =>
      result === "TookOver" ? leaveSlot(registry, binary, label, exit, config.closeTimeout) : Effect.void
  )
  switch (takeover) {
    case "TookOver":
      return "holder" satisfies ClaimOutcome
    case "Gone":
      return "gone" satisfies ClaimOutcome
    case "Superseded":
      return "rejected" satisfies ClaimOutcome
    case "Unavailable":
      return "unavailable" satisfies ClaimOutcome
  }
})

/** What a claim's answer means for the newcomer, before any probe. */
const claimOutcome = (claim: ClaimResult): ClaimOutcome | "conflict" => {
  switch (claim._tag) {
    case "Claimed":
    case "Reclaimed":
      return "holder"
    case "Conflict":
      return "conflict"
    case "Gone":
      return "gone"
    case "Held":
      return "rejected"
    case "Unavailable":
      return "unavailable"
  }
}

/**
 * Claims the slot (SPEC §3.2) and arms the watch; returns what runs for the rest of the binary's
 * life (the forwarder, which ends with the socket), so no generator frame stays suspended for
 * the connection's whole life. One generator function for every binary.
 */
export const setUpBinary = Effect.fnUntraced(
  function*(conn: PeerConnection, info: BinaryInfo, label: SessionLabel) {
    const registry = yield* Registry
    const config = yield* RelayConfig
    const watcher = yield* ConnectionWatcher
    const binary: BinaryHandle = {
      connId: binaryConnId(info.serverId),
      serverId: info.serverId,
      version: info.version,
      conn
    }
    label.connId = binary.connId
    // The claim is a resource: holding the slot and arming its release (grace if this connection
    // still holds it) happen in one step, so an interruption never leaves a held slot unreleased.
    const claim = yield* Effect.acquireRelease(
      registry.claim(binary),
      (claim, exit) =>
        claim._tag === "Claimed" || claim._tag === "Reclaimed"
          ? leaveSlot(registry, binary, label, exit, config.closeTimeout)
          : Effect.void
    )
    const first = claimOutcome(claim)
    const outcome: ClaimOutcome = first === "conflict" && claim._tag === "Conflict"
      ? yield* resolveConflict(binary, claim.incumbent, label)
      : first === "conflict"
      ? "rejected"
      : first
    // A newcomer that left: nobody to answer, nothing counted.
    if (outcome === "gone") return conn.closed
    if (outcome === "unavailable") {
      yield* (yield* Availability).countUnreachable
      yield* conn.close(CloseCodes.RegistryUnavailable)
      return conn.closed
    }
    if (outcome !== "holder") {
      if (outcome === "rejected") {
        yield* Metric.update(Metrics.upgradeAttempts.server.reject_409, 1)
        yield* Metric.update(Metrics.registerFailures.server_in_use, 1)
      }
      // Shutdown during the probe: the newcomer is closed 1000 and nothing is counted (§3.3).
      yield* conn.close(outcome === "rejected" ? CloseCodes.AlreadyClaimed : CloseCodes.Normal)
      return conn.closed
    }
    yield* Metric.update(Metrics.upgradeAttempts.server.accept, 1)

    const fields = { server_id: binary.serverId, binary_conn_id: binary.connId }
    trackBinary(yield* Ledger, conn, fields)
    yield* watcher.watch(
      conn,
      watchOptions(config, fields, () => Effect.andThen(Log.warn("write stalled", fields), conn.terminate))
    )
    // The binary forwarder ends only when the socket is gone: nothing to wait for after it.
    return forwardBinary(binary, registry)
  }
)
