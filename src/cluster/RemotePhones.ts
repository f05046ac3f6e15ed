/**
 * The binary's node's half of the data plane (CLUSTER.md §2.2–2.5): the phones of this node's
 * claims that are on other nodes. Each stands in routing as a `PhoneHandle` whose outbox relays
 * to the phone's node, so the binary forwarder routes to it exactly as to a phone here — the
 * directive rules (SPEC §2.3) included; frames are counted by the phone's node once written.
 * What those nodes send — a phone joining, its frames, its leaving — is applied here
 * synchronously, in the order it was sent.
 *
 * State ownership: `bySlot` belongs here. An entry exists only for a claim this node holds; every
 * transition of that claim on this node `forget`s it (the nodes of its phones are told by
 * whoever made the transition, from the phone list Redis gave it).
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { type BufferLedger, fits, makeRoom } from "../connection/BufferLedger.ts"
import type { PeerConnection } from "../connection/PeerConnection.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { closeNotice } from "../domain/Envelope.ts"
import type { Outbox } from "../outbox/Outbox.ts"
import { reportShed } from "../forwarding/Shedding.ts"
import type { OfferResult } from "../outbox/OutboxQueue.ts"
import type { PhoneHandle } from "../registry/Handles.ts"
import type { SlotTable } from "../registry/SlotTable.ts"
import type { Claim } from "./NodeSlots.ts"
import type { PlaneShape } from "./Plane.ts"
import { dropFrames, type RelayReport } from "./RelayReport.ts"
import type * as Wire from "./Wire.ts"

/** A phone on another node, as its binary's node routes to it. */
interface ProxyPhone extends PhoneHandle {
  readonly node: string
  /** Its frames could not be taken (the binary's buffer was full): the rest are dropped too. */
  refused: boolean
}

export interface RemotePhones {
  readonly phoneFor: (serverId: string, connId: string) => PhoneHandle | undefined
  /** The claim of `serverId` ended or changed here: its phones elsewhere are no longer routed to. */
  readonly forget: (serverId: string) => void
  /** The other nodes this node's claims have phones on. */
  readonly nodes: () => ReadonlySet<string>
  /**
   * Node `node` is dead: its phones of this node's claims are dropped from routing, and each
   * one owed a close notice (its connection ended without a code, SPEC §2.4: 1001) gets it now.
   * Returns, per server-id, the conn_ids dropped (for Redis).
   */
  readonly dropNode: (node: string) => Array<{ readonly serverId: string; readonly connIds: ReadonlyArray<string> }>
  /** The claim's binary left (grace): each node with phones of it is told. */
  readonly grace: (serverId: string, epoch: string) => void
  readonly apply: (
    message: Extract<Wire.Relayed, { readonly _tag: "PhoneJoined" | "PhoneLeft" | "ToBinary" }>,
    report: RelayReport
  ) => void
}

const ACCEPTED: OfferResult = { _tag: "Accepted", shed: [] }
const NOTHING_HELD = () => 0

/**
 * The stand-in's outbox: each offer goes onto the plane at once (the plane's queue is the bound;
 * a record it cannot take is dropped, counted `queue_full`, and the phone is closed as
 * overflowing). A directive stops it, as a directive stops a phone's own outbox.
 */
const relayingOutbox = (plane: PlaneShape, serverId: string, epoch: string, connId: string, node: string): Outbox => {
  let stopped = false
  return {
    offer: (frame, closeCode) => {
      if (stopped) return { _tag: "Refused", reason: "closing", frames: frame === undefined ? 0 : 1 }
      const queued = plane.send(node, { _tag: "ToPhone", serverId, epoch, connId, frame, closeCode })
      if (closeCode !== 0) stopped = true
      if (queued) return ACCEPTED
      stopped = true
      // Counted by the plane (`queue_full`); the phone's node closes it as overflowing.
      return { _tag: "Overflow", dropped: 0, close: closeCode === 0 ? CloseCodes.PhoneBacklogFull : { code: closeCode, reason: "" }, shed: [] }
    },
    flush: () => false,
    startWriter: Effect.void,
    stop: () => {
      stopped = true
      return 0
    },
    run: Effect.void,
    usedBytes: NOTHING_HELD,
    writerDied: () => false,
    heldBytes: NOTHING_HELD,
    shed: NOTHING_HELD,
    track: () => {},
    fields: {}
  }
}

/** The stand-in's connection: closing it asks the phone's node to close the phone. */
const relayingConn = (close: (code: CloseCodes.CloseCode) => void): PeerConnection => ({
  messages: Stream.empty,
  send: () => false,
  flushed: Effect.void,
  pendingBytes: NOTHING_HELD,
  lastProgressAt: NOTHING_HELD,
  ping: Effect.void,
  sendPing: () => false,
  pongs: NOTHING_HELD,
  close: (code) => Effect.sync(() => close(code)),
  terminate: Effect.void,
  abort: close,
  closed: Effect.never,
  messageStartedAt: () => undefined,
  isOpen: () => true
})

export const makeRemotePhones = (options: {
  readonly plane: PlaneShape
  readonly table: SlotTable
  readonly claims: Map<string, Claim>
  /** Unflushed bytes a binary connection may hold (SPEC §4.4). */
  readonly binaryBudget: number
  /** The relay-wide bound (SPEC §7.4): frames from other nodes count in it like any. */
  readonly ledger: BufferLedger
}): RemotePhones => {
  const { plane, table, claims } = options
  const bySlot = new Map<string, Map<string, ProxyPhone>>()

  const refuse = (message: { readonly serverId: string; readonly epoch: string; readonly connId: string }, node: string, why: Wire.RefusedWhy) =>
    plane.send(node, { _tag: "PhoneRefused", serverId: message.serverId, epoch: message.epoch, connId: message.connId, why })

  /** Whether `epoch` is this node's claim of `serverId`; another claim's record is counted stale. */
  const current = (serverId: string, epoch: string, report: RelayReport): boolean => {
    const held = claims.get(serverId)?.epoch
    if (held === epoch && table.holderOf(serverId) !== undefined) return true
    // No claim here at all: this node's own claim may still be on its way back from Redis.
    if (held !== undefined) report.stale++
    return false
  }

  /** Phone `connId` of this node's claim `epoch`, on `node`, joins the routing here. */
  const join = (serverId: string, epoch: string, connId: string, node: string): ProxyPhone => {
    let phones = bySlot.get(serverId)
    if (phones === undefined) bySlot.set(serverId, phones = new Map())
    const proxy: ProxyPhone = {
      connId,
      serverId,
      deviceName: undefined,
      servedBy: table.holderOf(serverId)!.binary,
      conn: relayingConn((close) =>
        void (close === CloseCodes.PhoneBacklogFull
          ? refuse({ serverId, epoch, connId }, node, "phone_backlog")
          : plane.send(node, { _tag: "ToPhone", serverId, epoch, connId, frame: undefined, closeCode: close.code }))
      ),
      outbox: relayingOutbox(plane, serverId, epoch, connId, node),
      envelopePrefix: Buffer.alloc(0),
      closedByBinary: false,
      node,
      refused: false
    }
    phones.set(connId, proxy)
    return proxy
  }

  const joined = (message: Extract<Wire.Relayed, { readonly _tag: "PhoneJoined" }>, report: RelayReport) => {
    if (current(message.serverId, message.epoch, report)) join(message.serverId, message.epoch, message.connId, message.node)
  }

  const left = (message: Extract<Wire.Relayed, { readonly _tag: "PhoneLeft" }>, report: RelayReport) => {
    const { serverId, epoch, connId, notice } = message
    if (!current(serverId, epoch, report)) return
    const phones = bySlot.get(serverId)
    const proxy = phones?.get(connId)
    if (proxy === undefined) return
    phones!.delete(connId)
    if (phones!.size === 0) bySlot.delete(serverId)
    // SPEC §2.4 across nodes: not when the binary asked for the close; only to the binary of the
    // claim that served the phone (the epoch), while it holds the slot live.
    if (notice === 0 || proxy.closedByBinary) return
    const binary = table.binaryFor(serverId)
    if (binary !== undefined && binary.conn.isOpen()) binary.conn.send([closeNotice(connId, notice)])
  }

  const frames = (message: Extract<Wire.Relayed, { readonly _tag: "ToBinary" }>, report: RelayReport) => {
    const { serverId, epoch, connId, envelopes } = message
    if (!current(serverId, epoch, report)) {
      // A stale claim's frames are counted stale, never written. No claim here at all (this
      // node's claim still on its way back from Redis, or long gone): the phone ends (1000
      // there) rather than lose frames from the middle of its stream.
      if (claims.get(serverId) === undefined) {
        dropFrames(report, "no_binary", envelopes.length)
        refuse(message, message.node, "no_binary")
      }
      return
    }
    // Its join overtaken by this node's own claim reply, or lost: the frames say where it is.
    const proxy = bySlot.get(serverId)?.get(connId) ?? join(serverId, epoch, connId, message.node)
    const binary = table.binaryFor(serverId)
    if (binary === undefined || !binary.conn.isOpen()) {
      // In grace, or the binary is leaving (its close under way, the grace next — a drain puts
      // it there): SPEC §3.4, the phone's session ends (1000 there), not "backlog full".
      dropFrames(report, "no_binary", envelopes.length)
      refuse(message, proxy.node, "no_binary")
      return
    }
    if (proxy.refused) return dropFrames(report, "binary_write_failed", envelopes.length)
    let bytes = 0
    for (const envelope of envelopes) bytes += envelope.length
    let room = binary.conn.pendingBytes() + bytes <= options.binaryBudget
    if (room && !fits(options.ledger, bytes)) {
      // The relay-wide budget is full: the largest backlogs are shed first (SPEC §7.4).
      const made = makeRoom(options.ledger, bytes, binary.conn)
      if (made.shed.length > 0) report.effects.push(reportShed(made.shed))
      room = made.fits
    }
    if (!room || !binary.conn.send(envelopes)) {
      // SPEC §4.4 across nodes: the phone whose frames the binary cannot take ends (1011 there).
      proxy.refused = true
      dropFrames(report, "binary_write_failed", envelopes.length)
      refuse(message, proxy.node, "backlog_full")
      return
    }
    report.forwarded += envelopes.length
    report.forwardedBytes += bytes
  }

  return {
    phoneFor: (serverId, connId) => bySlot.get(serverId)?.get(connId),
    forget: (serverId) => void bySlot.delete(serverId),
    nodes: () => {
      const nodes = new Set<string>()
      for (const phones of bySlot.values()) for (const proxy of phones.values()) nodes.add(proxy.node)
      return nodes
    },
    dropNode: (node) => {
      const dropped: Array<{ readonly serverId: string; readonly connIds: ReadonlyArray<string> }> = []
      for (const [serverId, phones] of bySlot) {
        const connIds: Array<string> = []
        const binary = table.binaryFor(serverId)
        for (const proxy of phones.values()) {
          if (proxy.node !== node) continue
          phones.delete(proxy.connId)
          connIds.push(proxy.connId)
          if (!proxy.closedByBinary && binary !== undefined && binary.conn.isOpen()) {
            binary.conn.send([closeNotice(proxy.connId, CloseCodes.NOTICE_WITHOUT_CODE)])
          }
        }
        if (phones.size === 0) bySlot.delete(serverId)
        if (connIds.length > 0) dropped.push({ serverId, connIds })
      }
      return dropped
    },
    grace: (serverId, epoch) => {
      const phones = bySlot.get(serverId)
      if (phones === undefined) return
      const nodes = new Set<string>()
      for (const proxy of phones.values()) nodes.add(proxy.node)
      for (const node of nodes) plane.send(node, { _tag: "SlotGrace", serverId, epoch })
    },
    apply: (message, report) => {
      switch (message._tag) {
        case "PhoneJoined":
          return joined(message, report)
        case "PhoneLeft":
          return left(message, report)
        case "ToBinary":
          return frames(message, report)
      }
    }
  }
}
