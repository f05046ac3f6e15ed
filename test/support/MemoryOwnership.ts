/**
 * An in-memory `OwnershipStore` for unit tests on `TestClock`: the semantics of `Scripts.ts`, one
 * shared state for every node made from it (several nodes, one "Redis"), time from the Effect
 * `Clock` (the fake Redis's clock can run ahead with `skewMillis`), and a switch that makes every
 * call fail as if Redis did not answer. The scripts themselves are tested against a real Redis
 * (test/e2e/cluster-scripts.test.ts); this fake lets the registry's timing be tested alone.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { OwnershipStore, RemotePhone } from "../../src/cluster/Ownership.ts"
import { RegistryUnavailable } from "../../src/domain/Errors.ts"

interface Slot {
  state: "live" | "grace"
  node: string
  epoch: string
  deadline: number | undefined
}

export interface MemoryRedis {
  readonly slots: Map<string, Slot>
  readonly phones: Map<string, Map<string, string>>
  readonly leases: Map<string, string>
  readonly members: Set<string>
  /** node → the server-ids it claimed (the reaper's index). */
  readonly claimIndex: Map<string, Set<string>>
  /** server-id → grace deadline (the sweep's index). */
  readonly graceIndex: Map<string, number>
  /** While true, every call fails `RegistryUnavailable` (`down`). */
  down: boolean
  /** The fake Redis's clock minus the test's Clock. */
  skewMillis: number
  /** Calls made, by name, in order. */
  readonly calls: Array<string>
  lastEpoch: number
}

export const makeMemoryRedis = (): MemoryRedis => ({
  slots: new Map(),
  phones: new Map(),
  leases: new Map(),
  members: new Set(),
  claimIndex: new Map(),
  graceIndex: new Map(),
  down: false,
  skewMillis: 0,
  calls: [],
  lastEpoch: 0
})

export const memoryOwnership = (redis: MemoryRedis, nodeId: string, token = `${nodeId}-token`): OwnershipStore => {
  const call = <A>(name: string, f: (now: number) => A): Effect.Effect<A, RegistryUnavailable> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      redis.calls.push(name)
      return redis.down ? Effect.fail(new RegistryUnavailable({ reason: "down" })) : Effect.sync(() => f(now + redis.skewMillis))
    })
  /** Like the scripts: the clock in µs, kept above every earlier epoch (one counter for all nodes). */
  const newEpoch = (now: number) => {
    redis.lastEpoch = Math.max(now * 1000, redis.lastEpoch + 1)
    return `${redis.lastEpoch}`
  }
  const takePhones = (serverId: string): Array<RemotePhone> => {
    const phones = [...(redis.phones.get(serverId) ?? new Map<string, string>()).entries()].map(([connId, node]) => ({ connId, node }))
    redis.phones.delete(serverId)
    return phones
  }
  const install = (serverId: string, epoch: string) =>
    redis.slots.set(serverId, { state: "live", node: nodeId, epoch, deadline: undefined })

  return {
    nodeId,
    claim: (serverId) =>
      call("claim", (now) => {
        const slot = redis.slots.get(serverId)
        if (slot?.state === "live") return { _tag: "Conflict" as const, node: slot.node, epoch: slot.epoch }
        const epoch = newEpoch(now)
        install(serverId, epoch)
        if (slot === undefined) {
          redis.phones.delete(serverId)
          return { _tag: "Claimed" as const, epoch }
        }
        return { _tag: "Reclaimed" as const, epoch, fromNode: slot.node, fromEpoch: slot.epoch, phones: takePhones(serverId) }
      }),
    takeover: (serverId, expected) =>
      call("takeover", (now) => {
        const slot = redis.slots.get(serverId)
        if (slot === undefined) return { _tag: "Missing" as const }
        if (slot.epoch !== expected) return { _tag: "Superseded" as const }
        const epoch = newEpoch(now)
        install(serverId, epoch)
        return { _tag: "TookOver" as const, epoch, fromNode: slot.node, phones: takePhones(serverId) }
      }),
    release: (serverId, epoch, grace) =>
      call("release", (now) => {
        const slot = redis.slots.get(serverId)
        if (slot === undefined || slot.node !== nodeId || slot.epoch !== epoch) return { _tag: "Stale" as const }
        slot.state = "grace"
        slot.deadline = now + Duration.toMillis(grace)
        return { _tag: "Grace" as const, deadline: slot.deadline }
      }),
    expire: (serverId, epoch) =>
      call("expire", (now) => {
        const slot = redis.slots.get(serverId)
        if (slot === undefined) return { _tag: "Gone" as const }
        if (slot.epoch !== epoch) return { _tag: "Stale" as const }
        if (slot.state === "grace" && slot.deadline! > now) return { _tag: "NotDue" as const, millis: slot.deadline! - now }
        if (slot.state === "live" && slot.node !== nodeId) return { _tag: "Stale" as const }
        redis.slots.delete(serverId)
        return { _tag: "Expired" as const, phones: takePhones(serverId) }
      }),
    register: (serverId, connId, cap, expected, live) =>
      call("register", () => {
        const slot = redis.slots.get(serverId)
        if (slot === undefined) return { _tag: "NoServer" as const }
        if (expected !== "" && slot.epoch !== expected) return { _tag: "Moved" as const, epoch: slot.epoch }
        const phones = redis.phones.get(serverId) ?? new Map<string, string>()
        redis.phones.set(serverId, phones)
        if (phones.has(connId)) return { _tag: "Duplicate" as const }
        if (phones.size >= cap) {
          for (const [id, node] of phones) if (node === nodeId && !live.includes(id)) phones.delete(id)
          if (phones.size >= cap) return { _tag: "AtCap" as const }
        }
        phones.set(connId, nodeId)
        return { _tag: "Ok" as const, epoch: slot.epoch, node: slot.node }
      }),
    unregister: (serverId, connId) =>
      call("unregister", () => {
        const phones = redis.phones.get(serverId)
        if (phones?.get(connId) === nodeId) phones.delete(connId)
      }),
    dropPhones: (serverId, deadNode, connIds) =>
      call("dropPhones", () => {
        const phones = redis.phones.get(serverId)
        for (const connId of connIds) if (phones?.get(connId) === deadNode) phones.delete(connId)
      }),
    holder: (serverId) =>
      call("holder", () => {
        const slot = redis.slots.get(serverId)
        return slot === undefined ? undefined : { state: slot.state, node: slot.node, epoch: slot.epoch }
      }),
    nodeAlive: (other) => call("nodeAlive", () => redis.leases.has(other)),
    assert: (serverId, epoch, state, graceLeft, live) =>
      call("assert", (now) => {
        const slot = redis.slots.get(serverId)
        if (slot !== undefined && BigInt(slot.epoch) > BigInt(epoch)) {
          return { _tag: "Lost" as const, node: slot.node, epoch: slot.epoch }
        }
        const answer = slot?.epoch === epoch ? "Held" as const : "Restored" as const
        if (answer === "Restored") redis.phones.delete(serverId)
        redis.slots.set(serverId, {
          state,
          node: nodeId,
          epoch,
          deadline: state === "grace" ? now + Duration.toMillis(graceLeft) : undefined
        })
        const phones = redis.phones.get(serverId) ?? new Map<string, string>()
        redis.phones.set(serverId, phones)
        for (const id of live) phones.set(id, nodeId)
        return { _tag: answer }
      }),
    lease: (_ttl) =>
      call("lease", () => {
        const holder = redis.leases.get(nodeId)
        if (holder === token) return "held" as const
        if (holder === undefined) {
          redis.leases.set(nodeId, token)
          redis.members.add(nodeId)
          return "lost" as const
        }
        return "taken" as const
      }),
    resign: call("resign", () => {
      if (redis.leases.get(nodeId) === token) redis.leases.delete(nodeId)
    }),
    indexClaim: (serverId) =>
      call("indexClaim", () => {
        const index = redis.claimIndex.get(nodeId) ?? new Set<string>()
        redis.claimIndex.set(nodeId, index.add(serverId))
      }),
    unindexClaim: (serverId) => call("unindexClaim", () => void redis.claimIndex.get(nodeId)?.delete(serverId)),
    indexGrace: (serverId, deadline) => call("indexGrace", () => void redis.graceIndex.set(serverId, deadline)),
    unindexGrace: (serverId) => call("unindexGrace", () => void redis.graceIndex.delete(serverId)),
    dueGraces: (before, limit) =>
      call("dueGraces", () =>
        [...redis.graceIndex.entries()].filter(([, deadline]) => deadline <= before).sort((a, b) => a[1] - b[1]).slice(0, limit)
          .map(([serverId]) => serverId)),
    members: call("members", () => [...redis.members]),
    claimsOf: (other) => call("claimsOf", () => [...(redis.claimIndex.get(other) ?? [])]),
    reap: (serverId, deadNode, grace) =>
      call("reap", (now) => {
        const slot = redis.slots.get(serverId)
        if (slot === undefined || slot.node !== deadNode) return { _tag: "Other" as const }
        if (slot.state === "grace") return { _tag: "Grace" as const, epoch: slot.epoch, deadline: slot.deadline! }
        slot.state = "grace"
        slot.deadline = now + Duration.toMillis(grace)
        return { _tag: "Reaped" as const, epoch: slot.epoch, deadline: slot.deadline }
      }),
    forget: (other) =>
      call("forget", () => {
        if (redis.leases.has(other)) return
        redis.claimIndex.delete(other)
        redis.members.delete(other)
      })
  }
}
