/**
 * What crosses nodes about claims and phones (CLUSTER.md §2.2–2.7), beside the frames themselves
 * (`RemotePhones`, `RemoteSlots`):
 *
 * * **The end of a claim reaches its phones on every node.** The node whose script ended claim
 *   `epoch` (a reclaim, a takeover, an expiry) got the slot's phones (conn_id → node) from Redis:
 *   it tells each of their nodes (`SlotEnded`), and each closes its own — 4404 for a reclaim or
 *   takeover, 1000 for an expiry. Counting stays with that one node.
 * * **The backstop** for a lost message: every second a node looks up the claim of each of its
 *   remote slots (one `HMGET` each, pipelined): another epoch → its phones 4404; in grace → frames
 *   stop; no claim for `MISSING_FOR` → 1000 (an expiry whose word was lost; the wait lets a holder
 *   re-assert its claims after Redis restarted empty). After this node's lease lapsed or its inbox
 *   reconnected (Redis may have restarted empty), the check also registers its phones of each
 *   remote slot again once the holder has re-asserted the claim, so the cap counts them.
 * * **Phones of a dead node** (the reaper's pace): a node whose lease lapsed lost its phones; the
 *   binary's node drops those of its claims, sends their binaries the close notice (1001: the
 *   connection ended without a code) and removes them from Redis, so they leave the cap (§2.6).
 * * **The batch handler** the plane calls with each batch's data-plane records.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { evict } from "../registry/Registry.ts"
import type { NodeSlots } from "./NodeSlots.ts"
import type { RemotePhone } from "./Ownership.ts"
import { finish, makeReport } from "./RelayReport.ts"
import type { RemoteSlot } from "./RemoteSlots.ts"
import type * as Wire from "./Wire.ts"

/** How long a remote slot's claim may be missing from Redis before its phones are closed 1000. */
export const MISSING_FOR_MILLIS = 3_000

export const makeCrossNode = (slots: NodeSlots, maxPhonesPerServer: number) => {
  const { remote, remotePhones, plane, store, lock } = slots

  /** Closes this node's phones of claim `epoch` (any claim when undefined). The caller holds the lock. */
  const endRemote = (serverId: string, epoch: string | undefined, how: Wire.EndedHow): Effect.Effect<void> =>
    Effect.suspend(() => {
      const phones = remote.end(serverId, epoch)
      if (phones.length === 0) return Effect.void
      return Effect.andThen(
        slots.publishCounts,
        how === "expired"
          ? evict(phones, CloseCodes.Normal, "grace_expired")
          : evict(phones, CloseCodes.Reclaimed, "evicted")
      )
    })

  /**
   * This node's script ended claim `epoch` and answered its phones: each other node with phones
   * of it is told; this node's own phones of it (if the claim was another node's) are closed.
   * The caller holds the lock.
   */
  const announceEnd = (
    serverId: string,
    epoch: string,
    phones: ReadonlyArray<RemotePhone>,
    how: Wire.EndedHow
  ): Effect.Effect<void> =>
    Effect.suspend(() => {
      const nodes = new Set<string>()
      for (const phone of phones) if (phone.node !== store.nodeId) nodes.add(phone.node)
      for (const node of nodes) plane.send(node, { _tag: "SlotEnded", serverId, epoch, how })
      return endRemote(serverId, epoch, how)
    })

  const relay = (messages: ReadonlyArray<Wire.Relayed>): Effect.Effect<void> | undefined => {
    const report = makeReport()
    for (const message of messages) {
      switch (message._tag) {
        case "PhoneJoined":
        case "PhoneLeft":
        case "ToBinary":
          remotePhones.apply(message, report)
          break
        case "ToPhone":
        case "PhoneRefused":
        case "SlotGrace":
          remote.apply(message, report)
          break
        case "SlotEnded": {
          const slot = remote.get(message.serverId)
          if (slot === undefined) break
          if (slot.epoch !== message.epoch) {
            report.stale++
            break
          }
          // Under the lock: a registration waiting on Redis for this slot finishes first, then ends with it.
          report.effects.push(lock(message.serverId, endRemote(message.serverId, message.epoch, message.how)))
        }
      }
    }
    return finish(report)
  }

  /** Registers the slot's phones here again under its epoch (`Duplicate`: still there). The caller holds the lock. */
  const rejoin = (slot: RemoteSlot) =>
    Effect.gen(function*() {
      slot.rejoin = false
      const live = [...slot.phones.keys()]
      for (const connId of live) {
        const reply = yield* Effect.exit(store.register(slot.serverId, connId, maxPhonesPerServer, slot.epoch, live))
        if (Exit.isFailure(reply)) {
          slot.rejoin = true
          return
        }
        if (reply.value._tag === "Moved") return yield* endRemote(slot.serverId, slot.epoch, "reclaimed")
      }
    })

  const checkSlot = (slot: RemoteSlot) =>
    Effect.gen(function*() {
      const now = yield* Effect.exit(store.holder(slot.serverId))
      if (Exit.isFailure(now)) return
      const holder = now.value
      yield* lock(
        slot.serverId,
        Effect.gen(function*() {
          if (remote.get(slot.serverId) !== slot) return
          if (holder === undefined) {
            const at = yield* Clock.currentTimeMillis
            slot.missingSince ??= at
            if (at - slot.missingSince >= MISSING_FOR_MILLIS) yield* endRemote(slot.serverId, slot.epoch, "expired")
            return
          }
          slot.missingSince = undefined
          if (holder.epoch !== slot.epoch) return yield* endRemote(slot.serverId, slot.epoch, "reclaimed")
          if (holder.state === "grace") slot.grace = true
          if (slot.rejoin) yield* rejoin(slot)
        })
      )
    })

  /** Every other node with phones of this node's claims whose lease lapsed: its phones leave. */
  const reapRemotePhones = Effect.gen(function*() {
    for (const node of remotePhones.nodes()) {
      const alive = yield* Effect.exit(store.nodeAlive(node))
      if (Exit.isFailure(alive) || alive.value) continue
      for (const { serverId, connIds } of remotePhones.dropNode(node)) {
        // No answer: the entries are dropped at the slot's end; the cap is short meanwhile.
        yield* Effect.ignore(store.dropPhones(serverId, node, connIds))
      }
    }
  })

  return {
    endRemote,
    reapRemotePhones,
    announceEnd,
    relay,
    /** Redis may have lost this node's phones of other nodes' claims: the backstop registers them again. */
    rejoinAll: Effect.sync(() => {
      for (const slot of remote.all()) slot.rejoin = true
    }),
    /** The backstop, once: every remote slot's claim looked up and acted on. */
    checkRemote: Effect.suspend(() => Effect.forEach(remote.all(), checkSlot, { concurrency: 16, discard: true }))
  }
}

export type CrossNode = ReturnType<typeof makeCrossNode>
