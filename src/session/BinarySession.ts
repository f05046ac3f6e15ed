/**
 * One binary's whole life after its upgrade (SPEC §1.2, §3): claim the server-id — first claim
 * wins, a slot in grace is reclaimed, a live incumbent is probed and either kept (newcomer 4409)
 * or taken over — then forward its envelopes until the socket is gone. The claim is a scoped
 * resource whose release puts the slot into grace if this connection still holds it.
 */
import * as Effect from "effect/Effect"
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
import { Registry } from "../registry/Registry.ts"
import { Lifecycle } from "./Lifecycle.ts"

export interface BinaryInfo {
  readonly serverId: string
  readonly version: string
}

type ClaimOutcome = "holder" | "rejected" | "draining"

/** Claims the slot, probing a live incumbent first (SPEC §3.2, §3.3). */
const claimSlot = (binary: BinaryHandle) =>
  Effect.gen(function*() {
    const registry = yield* Registry
    const config = yield* RelayConfig
    const lifecycle = yield* Lifecycle
    const claim = yield* registry.claim(binary)
    if (claim._tag !== "Conflict") return "holder" satisfies ClaimOutcome
    yield* Log.info("server id conflict", { server_id: binary.serverId, binary_conn_id: binary.connId })
    const answer = yield* Effect.raceFirst(
      Effect.map(probe(claim.incumbent.conn, config.probeTimeout), (alive): "alive" | "dead" => (alive ? "alive" : "dead")),
      Effect.as(lifecycle.draining, "draining" as const)
    )
    if (answer === "draining") return "draining" satisfies ClaimOutcome
    if (answer === "alive") return "rejected" satisfies ClaimOutcome
    const won = yield* registry.takeover(binary, claim.incumbent)
    return (won ? "holder" : "rejected") satisfies ClaimOutcome
  })

/**
 * Claims the slot and arms the watch; returns what runs for the rest of the binary's life (the
 * forwarder, which ends with the socket), so no generator frame stays suspended for
 * the connection's whole life. One generator function for every binary.
 */
const setUpBinary = Effect.fnUntraced(
  function*(conn: PeerConnection, info: BinaryInfo) {
    const registry = yield* Registry
    const config = yield* RelayConfig
    const watcher = yield* ConnectionWatcher
    const binary: BinaryHandle = {
      connId: binaryConnId(info.serverId),
      serverId: info.serverId,
      version: info.version,
      conn
    }
    // The claim is a resource: holding the slot and arming its release happen as one step, so an
    // interruption can never leave a claimed slot without a release (the probe inside races the
    // drain, so this never holds a shutdown up).
    const outcome = yield* Effect.acquireRelease(
      claimSlot(binary),
      (outcome) => (outcome === "holder" ? registry.release(binary) : Effect.void)
    )
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

export const runBinary = (conn: PeerConnection, info: BinaryInfo) => Effect.flatten(setUpBinary(conn, info))
