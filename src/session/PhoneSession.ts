/**
 * One phone's whole life after its upgrade (SPEC §1.3, §3.6, §4): register on the slot (or be
 * rejected 4404/4429), then run the heartbeat and write deadline beside the phone forwarder until
 * the socket is gone (the outbox writer runs in this scope only while something waits). The
 * registration is a scoped resource whose release sends the close notice (when owed) and leaves
 * the registry. Runs in the connection's scope.
 */
import * as Cause from "effect/Cause"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import { Ledger } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import { RelayConfig } from "../config/RelayConfig.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { closeNotice, envelopePrefix } from "../domain/Envelope.ts"
import * as Outbox from "../outbox/Outbox.ts"
import { forwardPhone, type PhoneForwardError } from "../forwarding/PhoneForwarder.ts"
import { ConnectionWatcher, watchOptions } from "../liveness/ConnectionWatcher.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { PhoneHandle } from "../registry/Handles.ts"
import { type RegisterError, Registry, type RegistryShape } from "../registry/Registry.ts"
import { Availability, type AvailabilityShape } from "../lifecycle/Availability.ts"
import { endConnection, guardTeardown, reportFailure, type SessionLabel } from "./SessionEnd.ts"

export interface PhoneInfo {
  readonly serverId: string
  readonly deviceName: string | undefined
}

/**
 * The close code each phone-forwarder failure ends the phone with (SPEC §2.1, §3.4, §4.4); the
 * forwarder counted the failure's frames already (`countBatch`). A new error without a code does
 * not compile.
 */
const CLOSE_FOR: { readonly [Tag in PhoneForwardError["_tag"]]: CloseCodes.CloseCode } = {
  InvalidJson: CloseCodes.Normal,
  NoBinary: CloseCodes.Normal,
  BinaryWriteFailed: CloseCodes.BinaryBacklogFull
}

/**
 * How each registration failure is answered (SPEC §3.6; CLUSTER.md for the last): what it
 * counts, the `phone rejected` reason, the close. A new failure without an answer does not compile.
 */
const REFUSAL: {
  readonly [Tag in RegisterError["_tag"]]: {
    readonly count: (availability: AvailabilityShape) => Effect.Effect<void>
    readonly reason: string
    readonly close: CloseCodes.CloseCode
  }
} = {
  NoServer: {
    count: () =>
      Effect.andThen(
        Metric.update(Metrics.upgradeAttempts.client.reject_404, 1),
        Metric.update(Metrics.registerFailures.no_server, 1)
      ),
    reason: "no server",
    close: CloseCodes.NoServer
  },
  PhonesAtCap: {
    count: () =>
      Effect.andThen(
        Metric.update(Metrics.upgradeAttempts.client.reject_429, 1),
        Metric.update(Metrics.registerFailures.phones_at_cap, 1)
      ),
    reason: "at cap",
    close: CloseCodes.PhonesAtCap
  },
  // Cluster mode: not an upgrade outcome (SPEC's twelve stay as they are), like a 503 before it.
  RegistryUnavailable: {
    count: (availability) => availability.countUnreachable,
    reason: "registry unavailable",
    close: CloseCodes.RegistryUnavailable
  }
}

/**
 * Close notice (SPEC §2.4): only when the phone ended on its own (not by directive), and the
 * very binary connection that served it still holds the slot live. Sent after the forwarder
 * finished (so after the phone's last forwarded frame) and before the phone leaves the registry.
 */
const sendCloseNotice = (registry: RegistryShape, phone: PhoneHandle) =>
  Effect.gen(function*() {
    if (phone.closedByBinary || !registry.isLiveHolder(phone.servedBy)) return
    if (registry.phoneFor(phone.serverId, phone.connId) !== phone) return
    const closed = yield* phone.conn.closed
    const code = closed.byRelay || closed.code === 1005 || closed.code === 1006
      ? CloseCodes.NOTICE_WITHOUT_CODE
      : closed.code
    const remote = phone.servedBy.remote
    if (remote === undefined) phone.servedBy.conn.send([closeNotice(phone.connId, code)])
    else remote.closeNotice(phone.connId, code)
  })

/**
 * The phone's release: its connection is finished first (closed and gone, whatever ended the
 * session), then the close notice, then it leaves the registry — even if something before died.
 * An outbox writer that died closed the phone itself; its `session failed` line is written here.
 */
const leave = (
  registry: RegistryShape,
  phone: PhoneHandle,
  label: SessionLabel,
  exit: Exit.Exit<unknown, unknown>,
  closeTimeout: Duration.Duration
): Effect.Effect<void> =>
  guardTeardown(
    label,
    Effect.ensuring(
      Effect.andThen(
        Effect.andThen(discardOutbox(phone), endConnection(phone.conn, label, exit, closeTimeout)),
        Effect.andThen(
          phone.outbox.writerDied() ? reportFailure(label, "outbox writer died") : Effect.void,
          sendCloseNotice(registry, phone)
        )
      ),
      registry.unregisterPhone(phone)
    )
  )

/**
 * The session is over: whatever its outbox still queues (a session that failed or was
 * interrupted with frames waiting) is dropped, released from the ledger and counted.
 */
const discardOutbox = (phone: PhoneHandle) =>
  Effect.suspend(() => Metric.update(Metrics.framesDropped.session_ended, phone.outbox.stop("closing")))

/**
 * After the forwarder ended: a typed failure closes the phone with its code, counts what its
 * outbox discards and waits for the socket to be gone. A forwarder that ended normally saw its socket close already.
 * A defect ends the session with it (its release closes the phone 1011 and reports it).
 */
const forwardingEnded = (
  conn: PeerConnection,
  outbox: Outbox.Outbox,
  forwarded: Exit.Exit<void, PhoneForwardError>
): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (Exit.isSuccess(forwarded)) return Effect.void
    if (Cause.hasDies(forwarded.cause)) return Effect.die(Cause.squash(forwarded.cause))
    const error = forwarded.cause.reasons.find((r) => r._tag === "Fail")?.error
    if (error === undefined) return Effect.asVoid(conn.closed)
    // What the phone's outbox still holds is discarded with the session.
    const discarded = outbox.stop("closing")
    return Effect.andThen(
      Effect.andThen(Metric.update(Metrics.framesDropped.session_ended, discarded), conn.close(CLOSE_FOR[error._tag])),
      conn.closed
    )
  })

/**
 * Registers the phone and arms its watch; returns what runs for the rest of its life (the
 * forwarder, then the end of its socket), so no generator frame stays suspended for
 * the connection's whole life. One generator function for every phone (`Effect.gen` per call
 * costs a fresh prototype each).
 */
export const setUpPhone = Effect.fnUntraced(
  function*(conn: PeerConnection, info: PhoneInfo, label: SessionLabel) {
    const registry = yield* Registry
    const config = yield* RelayConfig
    const ledger = yield* Ledger
    const watcher = yield* ConnectionWatcher
    const outbox = Outbox.make({ conn, budget: config.phoneOutboxBytes, ledger, scope: yield* Effect.scope })

    // The registration is a resource: registering and arming its release (close notice, then
    // unregister) happen as one step, so an interruption can never leak a registered phone.
    const registered = yield* Effect.exit(Effect.acquireRelease(
      registry.registerPhone(info.serverId, (connId, servedBy) => ({
        connId,
        serverId: info.serverId,
        deviceName: info.deviceName,
        servedBy,
        conn,
        outbox,
        envelopePrefix: envelopePrefix(connId),
        closedByBinary: false
      })),
      (phone, exit) => leave(registry, phone, label, exit, config.closeTimeout)
    ))
    if (Exit.isFailure(registered)) {
      const error = registered.cause.reasons.find((r) => r._tag === "Fail")?.error
      // Interrupted or a defect: not a refusal, and not the session's to answer.
      if (error === undefined) return yield* Effect.orDie(Effect.failCause(registered.cause))
      const refusal = REFUSAL[error._tag]
      yield* refusal.count(yield* Availability)
      yield* Log.info("phone rejected", { server_id: info.serverId, reason: refusal.reason })
      yield* conn.close(refusal.close)
      return conn.closed
    }
    const phone = registered.value
    label.connId = phone.connId
    yield* Metric.update(Metrics.upgradeAttempts.client.accept, 1)

    const fields = { server_id: info.serverId, conn_id: phone.connId }
    outbox.track(fields)
    yield* watcher.watch(conn, watchOptions(config, fields, () => phoneWriteStalled(conn, outbox, fields)))

    const forwarding = forwardPhone(phone, { registry, ledger, binaryBudget: config.phoneOutboxBytes })
    return Effect.flatMap(Effect.exit(forwarding), (forwarded) => forwardingEnded(conn, outbox, forwarded))
  }
)

/** A phone whose socket stopped taking bytes: its pending frames are dropped, then it is ended. */
const phoneWriteStalled = Effect.fnUntraced(function*(conn: PeerConnection, outbox: Outbox.Outbox, fields: Log.LogFields) {
  const dropped = outbox.stop("phone_write_failed")
  yield* Metric.update(Metrics.framesDropped.phone_write_failed, dropped)
  yield* Log.warn("write stalled", fields)
  yield* conn.close(CloseCodes.PhoneWriteFailed)
  yield* conn.terminate
})
