/**
 * The phone's node's half of the data plane (CLUSTER.md §2.2–2.5): a "remote slot" per
 * server-id whose binary is on another node and that has phones here — the holder's node, the
 * claim's epoch, whether it is in grace, and this node's phones of it. The hot path reads it
 * synchronously (`binaryFor`, `phoneFor`: no Redis command per frame); the slot's binary is a
 * stand-in whose frames go onto the plane to the holder's node, tagged with the epoch.
 *
 * What the holder's node sends back — frames and directives for these phones, refusals, grace,
 * the end of the claim — is applied here in order; anything of another claim than the slot's is
 * dropped (`stale_epoch`), so a phone here never hears two binaries (§2.7).
 *
 * State ownership: `slots` belongs here; changes that wait on Redis (registration, the
 * backstop, the end of a claim) run under the registry's per-server-id lock.
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { Frame, PeerConnection } from "../connection/PeerConnection.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { ConnectionLost } from "../domain/Errors.ts"
import { reportShed } from "../forwarding/Shedding.ts"
import type * as Metrics from "../observability/Metrics.ts"
import type { StopReason } from "../outbox/OutboxQueue.ts"
import type { BinaryHandle, PhoneHandle } from "../registry/Handles.ts"
import type { PlaneShape } from "./Plane.ts"
import { dropFrames, type RelayReport } from "./RelayReport.ts"
import type * as Wire from "./Wire.ts"

export interface RemoteSlot {
  readonly serverId: string
  readonly node: string
  readonly epoch: string
  grace: boolean
  /** The stand-in for the binary on `node`: the `servedBy` of every phone here of this claim. */
  readonly binary: BinaryHandle
  readonly phones: Map<string, PhoneHandle>
  /** Close notices owed to the binary, by conn_id, sent with the phone's leaving. */
  readonly notices: Map<string, number>
  /** Clock time (ms) the backstop first found no claim in Redis; reset when it finds one. */
  missingSince: number | undefined
  /** Redis may have lost this node's phones of the slot (it restarted empty): the backstop registers them again. */
  rejoin: boolean
}

const REFUSED_REASON: Record<StopReason, Metrics.DropReason> = {
  backlog_full: "backlog_full",
  phone_write_failed: "phone_write_failed",
  closing: "unknown_conn_id"
}

const REFUSED_CLOSE: Record<Wire.RefusedWhy, CloseCodes.CloseCode> = {
  backlog_full: CloseCodes.BinaryBacklogFull,
  no_binary: CloseCodes.Normal,
  phone_backlog: CloseCodes.PhoneBacklogFull
}

const inertConn = (slot: () => RemoteSlot): PeerConnection => ({
  messages: Stream.empty,
  send: () => false,
  flushed: Effect.fail(new ConnectionLost()),
  pendingBytes: () => 0,
  lastProgressAt: () => 0,
  ping: Effect.fail(new ConnectionLost()),
  sendPing: () => false,
  pongs: () => 0,
  close: () => Effect.void,
  terminate: Effect.void,
  abort: () => {},
  closed: Effect.never,
  messageStartedAt: () => undefined,
  // The phone forwarder's check: frames go out only while the claim is live.
  isOpen: () => !slot().grace
})

export const makeRemoteSlots = (plane: PlaneShape, nodeId: string) => {
  const slots = new Map<string, RemoteSlot>()
  let phoneCount = 0

  const open = (serverId: string, node: string, epoch: string): RemoteSlot => {
    let slot: RemoteSlot
    const binary: BinaryHandle = {
      connId: `server-${serverId}@${node}`,
      serverId,
      version: "",
      conn: inertConn(() => slot),
      remote: {
        // Envelopes as the forwarder hands them (prefix, message, brace): copied once, into the batch.
        relay: (connId, envelopes) => plane.send(node, { _tag: "ToBinary", serverId, epoch, connId, node: nodeId, envelopes }),
        closeNotice: (connId, code) => void slot.notices.set(connId, code)
      }
    }
    slot = { serverId, node, epoch, grace: false, binary, phones: new Map(), notices: new Map(), missingSince: undefined, rejoin: false }
    slots.set(serverId, slot)
    return slot
  }

  /** Removes the slot with every phone (they are the caller's to close). */
  const end = (serverId: string, epoch?: string): ReadonlyArray<PhoneHandle> => {
    const slot = slots.get(serverId)
    if (slot === undefined || (epoch !== undefined && slot.epoch !== epoch)) return []
    slots.delete(serverId)
    phoneCount -= slot.phones.size
    return [...slot.phones.values()]
  }

  const toPhone = (slot: RemoteSlot, message: Extract<Wire.Relayed, { readonly _tag: "ToPhone" }>, report: RelayReport) => {
    const frames = message.frame === undefined ? 0 : 1
    const phone = slot.phones.get(message.connId)
    if (phone === undefined) return dropFrames(report, "unknown_conn_id", frames)
    const result = phone.outbox.offer(message.frame, message.closeCode)
    if (result._tag === "Refused") return dropFrames(report, REFUSED_REASON[result.reason], result.frames)
    // The binary's node logged the directive; here it suppresses the close notice (SPEC §2.4).
    if (message.closeCode !== 0) phone.closedByBinary = true
    if (result.shed.length > 0) report.effects.push(reportShed(result.shed))
    if (result._tag === "Accepted") return void report.touched.add(phone)
    dropFrames(report, "backlog_full", result.dropped)
    report.effects.push(phone.conn.close(result.close))
  }

  const apply = (
    message: Extract<Wire.Relayed, { readonly _tag: "ToPhone" | "PhoneRefused" | "SlotGrace" }>,
    report: RelayReport
  ): void => {
    const slot = slots.get(message.serverId)
    if (slot === undefined) {
      if (message._tag === "ToPhone") dropFrames(report, "unknown_conn_id", message.frame === undefined ? 0 : 1)
      return
    }
    if (slot.epoch !== message.epoch) {
      report.stale++
      return
    }
    switch (message._tag) {
      case "ToPhone":
        return toPhone(slot, message, report)
      case "SlotGrace":
        slot.grace = true
        return
      case "PhoneRefused": {
        const phone = slot.phones.get(message.connId)
        if (phone === undefined) return
        const dropped = phone.outbox.stop("closing")
        dropFrames(report, "session_ended", dropped)
        report.effects.push(phone.conn.close(REFUSED_CLOSE[message.why]))
      }
    }
  }

  return {
    get: (serverId: string) => slots.get(serverId),
    all: () => [...slots.values()],
    phoneCount: () => phoneCount,
    binaryFor: (serverId: string): BinaryHandle | undefined => {
      const slot = slots.get(serverId)
      return slot === undefined || slot.grace ? undefined : slot.binary
    },
    phoneFor: (serverId: string, connId: string) => slots.get(serverId)?.phones.get(connId),
    isLiveHolder: (binary: BinaryHandle): boolean => {
      const slot = slots.get(binary.serverId)
      return slot !== undefined && slot.binary === binary && !slot.grace
    },
    /**
     * A phone registered in Redis on the claim `epoch` of `node`: added to that claim's slot (a
     * slot of an older claim is replaced: its phones are returned, to be closed 4404), and its
     * node told, ahead of any frame of the phone's.
     */
    add: (
      serverId: string,
      node: string,
      epoch: string,
      connId: string,
      make: (connId: string, servedBy: BinaryHandle) => PhoneHandle
    ) => {
      const current = slots.get(serverId)
      const replaced = current !== undefined && current.epoch !== epoch ? end(serverId) : []
      const slot = current !== undefined && current.epoch === epoch ? current : open(serverId, node, epoch)
      const phone = make(connId, slot.binary)
      slot.phones.set(connId, phone)
      phoneCount++
      plane.send(node, { _tag: "PhoneJoined", serverId, epoch, connId, node: nodeId })
      return { phone, replaced }
    },
    /** The phone left (identity): its node is told, with the close notice it is owed if any. */
    remove: (phone: PhoneHandle): boolean => {
      const slot = slots.get(phone.serverId)
      if (slot === undefined || slot.phones.get(phone.connId) !== phone) return false
      slot.phones.delete(phone.connId)
      phoneCount--
      const notice = slot.notices.get(phone.connId) ?? 0
      slot.notices.delete(phone.connId)
      plane.send(slot.node, { _tag: "PhoneLeft", serverId: slot.serverId, epoch: slot.epoch, connId: phone.connId, notice })
      if (slot.phones.size === 0) slots.delete(phone.serverId)
      return true
    },
    end,
    apply
  }
}

export type RemoteSlots = ReturnType<typeof makeRemoteSlots>
