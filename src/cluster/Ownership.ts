/**
 * The shared registry as this node sees it: each ownership transition of `Scripts.ts` as one
 * typed call, made as this node (its id and its process's boot token are baked in). The cluster
 * registry talks only to this interface, so its timing (grace deadlines, retries) is tested on
 * `TestClock` against an in-memory store, and the scripts against a real Redis.
 *
 * A script that ran too late to be trusted (`late`) fails like a call that got no answer: the
 * caller has already given up on it, and the script changed nothing.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { RegistryUnavailable } from "../domain/Errors.ts"
import type { ClusterRedisShape } from "./ClusterRedis.ts"
import type { ClusterKeys } from "./Keys.ts"
import * as Scripts from "./Scripts.ts"

/** A phone of the slot, on some node. */
export interface RemotePhone {
  readonly connId: string
  readonly node: string
}

export type ClaimReply =
  | { readonly _tag: "Claimed"; readonly epoch: string }
  | {
    readonly _tag: "Reclaimed"
    readonly epoch: string
    readonly fromNode: string
    readonly fromEpoch: string
    readonly phones: ReadonlyArray<RemotePhone>
  }
  | { readonly _tag: "Conflict"; readonly node: string; readonly epoch: string }

export type TakeoverReply =
  | { readonly _tag: "TookOver"; readonly epoch: string; readonly fromNode: string; readonly phones: ReadonlyArray<RemotePhone> }
  | { readonly _tag: "Superseded" }
  | { readonly _tag: "Missing" }

export type ReleaseReply = { readonly _tag: "Grace"; readonly deadline: number } | { readonly _tag: "Stale" }

export type ExpireReply =
  | { readonly _tag: "Expired"; readonly phones: ReadonlyArray<RemotePhone> }
  | { readonly _tag: "NotDue"; readonly millis: number }
  /** Another claim holds the slot now. */
  | { readonly _tag: "Stale" }
  /** No slot: another node expired it (and counted it), or its keys were lost. */
  | { readonly _tag: "Gone" }

/** `Reaped`: a dead node's live claim entered grace now; `Grace`: it was in grace already. */
export type ReapReply =
  | { readonly _tag: "Reaped" | "Grace"; readonly epoch: string; readonly deadline: number }
  | { readonly _tag: "Other" }

export type RegisterReply =
  | { readonly _tag: "Ok"; readonly epoch: string; readonly node: string }
  | { readonly _tag: "NoServer" }
  | { readonly _tag: "Moved"; readonly epoch: string }
  | { readonly _tag: "Duplicate" }
  | { readonly _tag: "AtCap" }

export type AssertReply =
  | { readonly _tag: "Held" }
  | { readonly _tag: "Restored" }
  | { readonly _tag: "Lost"; readonly node: string; readonly epoch: string }

/** `held`: renewed. `lost`: it had lapsed and is taken again (claims must be checked). `taken`: another process. */
export type LeaseReply = "held" | "lost" | "taken"

export interface Holder {
  readonly state: "live" | "grace"
  readonly node: string
  readonly epoch: string
}

export interface OwnershipStore {
  readonly nodeId: string
  readonly claim: (serverId: string) => Effect.Effect<ClaimReply, RegistryUnavailable>
  readonly takeover: (serverId: string, expected: string) => Effect.Effect<TakeoverReply, RegistryUnavailable>
  readonly release: (serverId: string, epoch: string, grace: Duration.Duration) => Effect.Effect<ReleaseReply, RegistryUnavailable>
  readonly expire: (serverId: string, epoch: string) => Effect.Effect<ExpireReply, RegistryUnavailable>
  /** `expected` is the claim the phone will be served by; `""` for any. `live`: this node's phones of the slot. */
  readonly register: (
    serverId: string,
    connId: string,
    cap: number,
    expected: string,
    live: ReadonlyArray<string>
  ) => Effect.Effect<RegisterReply, RegistryUnavailable>
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
  ) => Effect.Effect<AssertReply, RegistryUnavailable>
  readonly lease: (ttl: Duration.Duration) => Effect.Effect<LeaseReply, RegistryUnavailable>
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
  readonly reap: (serverId: string, deadNode: string, grace: Duration.Duration) => Effect.Effect<ReapReply, RegistryUnavailable>
  /** Drops a reaped node's index and membership, unless it came back meanwhile. */
  readonly forget: (nodeId: string) => Effect.Effect<void, RegistryUnavailable>
}

/** How much of a call's 2 s deadline a script may start in and still be trusted. */
const TRUSTED_FOR_MILLIS = 1_500

const phonesOf = (reply: ReadonlyArray<string>, from: number): Array<RemotePhone> => {
  const phones: Array<RemotePhone> = []
  for (let i = from; i + 1 < reply.length; i += 2) phones.push({ connId: reply[i]!, node: reply[i + 1]! })
  return phones
}

const LATE = new RegistryUnavailable({ reason: "late" })

/** A reply this code does not know (a script of another version?): no answer to trust. */
const unexpected = (reply: unknown) =>
  Effect.fail(new RegistryUnavailable({ reason: reply === "late" ? "late" : "unexpected reply" }))

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
          (reply): Effect.Effect<ClaimReply, RegistryUnavailable> => {
            switch (reply[0]) {
              case "claimed":
                return Effect.succeed({ _tag: "Claimed", epoch: reply[1]! })
              case "reclaimed":
                return Effect.succeed({
                  _tag: "Reclaimed",
                  epoch: reply[1]!,
                  fromNode: reply[2]!,
                  fromEpoch: reply[3]!,
                  phones: phonesOf(reply, 4)
                })
              case "conflict":
                return Effect.succeed({ _tag: "Conflict", node: reply[1]!, epoch: reply[2]! })
              case "late":
                return Effect.fail(LATE)
              default:
                return unexpected(reply[0])
            }
          }
        )),
    takeover: (serverId, expected) =>
      Effect.flatMap(notAfter, (deadline) =>
        Effect.flatMap(
          redis.eval("takeover", Scripts.takeover)(keys.server(serverId), keys.phones(serverId), nodeId, expected, deadline),
          (reply): Effect.Effect<TakeoverReply, RegistryUnavailable> => {
            switch (reply[0]) {
              case "tookover":
                return Effect.succeed({ _tag: "TookOver", epoch: reply[1]!, fromNode: reply[2]!, phones: phonesOf(reply, 3) })
              case "superseded":
                return Effect.succeed({ _tag: "Superseded" })
              case "missing":
                return Effect.succeed({ _tag: "Missing" })
              default:
                return unexpected(reply[0])
            }
          }
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
        (reply): Effect.Effect<ReleaseReply, RegistryUnavailable> =>
          reply[0] === "grace"
            ? Effect.succeed({ _tag: "Grace", deadline: Number(reply[1]) })
            : reply[0] === "stale"
            ? Effect.succeed({ _tag: "Stale" })
            : unexpected(reply[0])
      ),
    expire: (serverId, epoch) =>
      Effect.flatMap(
        redis.eval("expire", Scripts.expire)(keys.server(serverId), keys.phones(serverId), nodeId, epoch),
        (reply): Effect.Effect<ExpireReply, RegistryUnavailable> => {
          switch (reply[0]) {
            case "expired":
              return Effect.succeed({ _tag: "Expired", phones: phonesOf(reply, 1) })
            case "notdue":
              return Effect.succeed({ _tag: "NotDue", millis: Number(reply[1]) })
            case "stale":
              return Effect.succeed({ _tag: "Stale" })
            case "gone":
              return Effect.succeed({ _tag: "Gone" })
            default:
              return unexpected(reply[0])
          }
        }
      ),
    register: (serverId, connId, cap, expected, live) =>
      Effect.flatMap(
        redis.eval("register", Scripts.register)(keys.server(serverId), keys.phones(serverId), connId, nodeId, cap, expected, live),
        (reply): Effect.Effect<RegisterReply, RegistryUnavailable> => {
          switch (reply[0]) {
            case "ok":
              return Effect.succeed({ _tag: "Ok", epoch: reply[1]!, node: reply[2]! })
            case "noserver":
              return Effect.succeed({ _tag: "NoServer" })
            case "moved":
              return Effect.succeed({ _tag: "Moved", epoch: reply[1]! })
            case "duplicate":
              return Effect.succeed({ _tag: "Duplicate" })
            case "atcap":
              return Effect.succeed({ _tag: "AtCap" })
            default:
              return unexpected(reply[0])
          }
        }
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
        (reply): Effect.Effect<AssertReply, RegistryUnavailable> =>
          reply[0] === "held"
            ? Effect.succeed({ _tag: "Held" })
            : reply[0] === "restored"
            ? Effect.succeed({ _tag: "Restored" })
            : reply[0] === "lost"
            ? Effect.succeed({ _tag: "Lost", node: reply[1]!, epoch: reply[2]! })
            : unexpected(reply[0])
      ),
    lease: (ttl) =>
      Effect.flatMap(
        redis.eval("lease", Scripts.lease)(keys.node(nodeId), keys.members, nodeId, token, Duration.toMillis(ttl)),
        (reply): Effect.Effect<LeaseReply, RegistryUnavailable> =>
          reply === "held" || reply === "lost" || reply === "taken" ? Effect.succeed(reply) : unexpected(reply)
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
        (reply): Effect.Effect<ReapReply, RegistryUnavailable> =>
          reply[0] === "reaped" || reply[0] === "grace"
            ? Effect.succeed({ _tag: reply[0] === "reaped" ? "Reaped" : "Grace", epoch: reply[1]!, deadline: Number(reply[2]) })
            : reply[0] === "other"
            ? Effect.succeed({ _tag: "Other" })
            : unexpected(reply[0])
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
