/**
 * The shared registry as this node sees it: each ownership transition of `Scripts.ts` as one
 * typed call, made as this node (its id and its process's boot token are baked in). The cluster
 * registry talks only to this interface, so its timing (grace deadlines, retries) is tested on
 * `TestClock` against an in-memory store, and the scripts against a real Redis.
 *
 * What each script's answer means is `OwnershipReplies.ts`; a script that ran too late to be
 * trusted (`late`) fails like a call that got no answer.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { RegistryUnavailable } from "../domain/Errors.ts"
import type { ClusterRedisShape } from "./ClusterRedis.ts"
import type { ClusterKeys } from "./Keys.ts"
import * as Replies from "./OwnershipReplies.ts"
import * as Scripts from "./Scripts.ts"

export type {
  AssertReply,
  ClaimReply,
  ExpireReply,
  LeaseReply,
  ReapReply,
  RegisterReply,
  ReleaseReply,
  RemotePhone,
  TakeoverReply
} from "./OwnershipReplies.ts"

export interface Holder {
  readonly state: "live" | "grace"
  readonly node: string
  readonly epoch: string
}

export interface OwnershipStore {
  readonly nodeId: string
  readonly claim: (serverId: string) => Effect.Effect<Replies.ClaimReply, RegistryUnavailable>
  readonly takeover: (serverId: string, expected: string) => Effect.Effect<Replies.TakeoverReply, RegistryUnavailable>
  readonly release: (serverId: string, epoch: string, grace: Duration.Duration) => Effect.Effect<Replies.ReleaseReply, RegistryUnavailable>
  readonly expire: (serverId: string, epoch: string) => Effect.Effect<Replies.ExpireReply, RegistryUnavailable>
  /** `expected` is the claim the phone will be served by; `""` for any. `live`: this node's phones of the slot. */
  readonly register: (
    serverId: string,
    connId: string,
    cap: number,
    expected: string,
    live: ReadonlyArray<string>
  ) => Effect.Effect<Replies.RegisterReply, RegistryUnavailable>
  readonly unregister: (serverId: string, connId: string) => Effect.Effect<void, RegistryUnavailable>
  /** Removes phones of a dead node from the slot (those still listed as that node's). */
  readonly dropPhones: (serverId: string, deadNode: string, connIds: ReadonlyArray<string>) => Effect.Effect<void, RegistryUnavailable>
  /** Who holds the slot, if anyone. */
  readonly holder: (serverId: string) => Effect.Effect<Holder | undefined, RegistryUnavailable>
  /** Whether a node's lease is alive (a node whose lease lapsed is dead to the cluster, §2.6). */
  readonly nodeAlive: (nodeId: string) => Effect.Effect<boolean, RegistryUnavailable>
  /** States a claim this node still holds (after its lease lapsed, or Redis came back empty). */
  readonly assert: (
    serverId: string,
    epoch: string,
    state: "live" | "grace",
    graceLeft: Duration.Duration,
    live: ReadonlyArray<string>
  ) => Effect.Effect<Replies.AssertReply, RegistryUnavailable>
  readonly lease: (ttl: Duration.Duration) => Effect.Effect<Replies.LeaseReply, RegistryUnavailable>
  readonly resign: Effect.Effect<void, RegistryUnavailable>
  /** The reaper's index of this node's claims (advisory: the slot keys decide). */
  readonly indexClaim: (serverId: string) => Effect.Effect<void, RegistryUnavailable>
  readonly unindexClaim: (serverId: string) => Effect.Effect<void, RegistryUnavailable>
  /** The sweep's index of graces by deadline (advisory too). */
  readonly indexGrace: (serverId: string, deadline: number) => Effect.Effect<void, RegistryUnavailable>
  readonly unindexGrace: (serverId: string) => Effect.Effect<void, RegistryUnavailable>
  /** Up to `limit` server-ids whose grace deadline is at or before `before` (Redis ms). */
  readonly dueGraces: (before: number, limit: number) => Effect.Effect<ReadonlyArray<string>, RegistryUnavailable>
  /** Every node listed as a member (it held a lease and was not yet reaped). */
  readonly members: Effect.Effect<ReadonlyArray<string>, RegistryUnavailable>
  /** The server-ids `nodeId` has claimed, by the index. */
  readonly claimsOf: (nodeId: string) => Effect.Effect<ReadonlyArray<string>, RegistryUnavailable>
  readonly reap: (serverId: string, deadNode: string, grace: Duration.Duration) => Effect.Effect<Replies.ReapReply, RegistryUnavailable>
  /** Drops a reaped node's index and membership, unless it came back meanwhile. */
  readonly forget: (nodeId: string) => Effect.Effect<void, RegistryUnavailable>
}

/** How much of a call's 2 s deadline a script may start in and still be trusted. */
const TRUSTED_FOR_MILLIS = 1_500

export const redisOwnership = (
  redis: ClusterRedisShape,
  keys: ClusterKeys,
  nodeId: string,
  token: string
): OwnershipStore => {
  const notAfter = Effect.map(redis.redisTimeMillis, (now) => now + TRUSTED_FOR_MILLIS)

  return {
    nodeId,
    claim: (serverId) =>
      Effect.flatMap(notAfter, (deadline) =>
        Effect.flatMap(
          redis.eval("claim", Scripts.claim)(keys.server(serverId), keys.phones(serverId), nodeId, deadline),
          Replies.claimReply
        )),
    takeover: (serverId, expected) =>
      Effect.flatMap(notAfter, (deadline) =>
        Effect.flatMap(
          redis.eval("takeover", Scripts.takeover)(keys.server(serverId), keys.phones(serverId), nodeId, expected, deadline),
          Replies.takeoverReply
        )),
    release: (serverId, epoch, grace) =>
      Effect.flatMap(
        redis.eval("release", Scripts.release)(
          keys.server(serverId),
          keys.phones(serverId),
          nodeId,
          epoch,
          Duration.toMillis(grace),
          KEEP_AFTER_GRACE_MILLIS
        ),
        Replies.releaseReply
      ),
    expire: (serverId, epoch) =>
      Effect.flatMap(
        redis.eval("expire", Scripts.expire)(keys.server(serverId), keys.phones(serverId), nodeId, epoch),
        Replies.expireReply
      ),
    register: (serverId, connId, cap, expected, live) =>
      Effect.flatMap(
        redis.eval("register", Scripts.register)(keys.server(serverId), keys.phones(serverId), connId, nodeId, cap, expected, live),
        Replies.registerReply
      ),
    unregister: (serverId, connId) =>
      Effect.asVoid(redis.eval("unregister", Scripts.unregister)(keys.phones(serverId), connId, nodeId)),
    dropPhones: (serverId, deadNode, connIds) =>
      Effect.forEach(connIds, (connId) => redis.eval("reap", Scripts.unregister)(keys.phones(serverId), connId, deadNode), {
        discard: true
      }),
    holder: (serverId) =>
      Effect.map(
        redis.send<[string | null, string | null, string | null]>("lookup", "HMGET", keys.server(serverId), "state", "node", "epoch"),
        ([state, node, epoch]): Holder | undefined =>
          (state === "live" || state === "grace") && node !== null && epoch !== null ? { state, node, epoch } : undefined
      ),
    nodeAlive: (other) => Effect.map(redis.send<number>("lookup", "EXISTS", keys.node(other)), (n) => n === 1),
    assert: (serverId, epoch, state, graceLeft, live) =>
      Effect.flatMap(
        redis.eval("sync", Scripts.assertClaim)(
          keys.server(serverId),
          keys.phones(serverId),
          nodeId,
          epoch,
          state,
          Math.max(0, Math.ceil(Duration.toMillis(graceLeft))),
          KEEP_AFTER_GRACE_MILLIS,
          live
        ),
        Replies.assertReply
      ),
    lease: (ttl) =>
      Effect.flatMap(
        redis.eval("lease", Scripts.lease)(keys.node(nodeId), keys.members, nodeId, token, Duration.toMillis(ttl)),
        Replies.leaseReply
      ),
    resign: Effect.asVoid(redis.eval("lease", Scripts.resign)(keys.node(nodeId), token)),
    indexClaim: (serverId) => Effect.asVoid(redis.send("index", "SADD", keys.claims(nodeId), serverId)),
    unindexClaim: (serverId) => Effect.asVoid(redis.send("index", "SREM", keys.claims(nodeId), serverId)),
    indexGrace: (serverId, deadline) => Effect.asVoid(redis.send("index", "ZADD", keys.graces, `${deadline}`, serverId)),
    unindexGrace: (serverId) => Effect.asVoid(redis.send("index", "ZREM", keys.graces, serverId)),
    dueGraces: (before, limit) =>
      redis.send<ReadonlyArray<string>>("sweep", "ZRANGE", keys.graces, "-inf", `${before}`, "BYSCORE", "LIMIT", "0", `${limit}`),
    members: redis.send<ReadonlyArray<string>>("sweep", "HKEYS", keys.members),
    claimsOf: (other) => redis.send<ReadonlyArray<string>>("sweep", "SMEMBERS", keys.claims(other)),
    reap: (serverId, deadNode, grace) =>
      Effect.flatMap(
        redis.eval("reap", Scripts.reap)(keys.server(serverId), keys.phones(serverId), deadNode, Duration.toMillis(grace), KEEP_AFTER_GRACE_MILLIS),
        Replies.reapReply
      ),
    forget: (other) => Effect.asVoid(redis.eval("reap", Scripts.forget)(keys.node(other), keys.members, keys.claims(other), other))
  }
}

/**
 * How long a slot's keys outlive its grace deadline in Redis: the backstop for a grace whose
 * holder died and that no other node expired (CLUSTER.md §3); the holder or any node's sweep
 * expires it long before.
 */
export const KEEP_AFTER_GRACE_MILLIS = 10 * 60_000
