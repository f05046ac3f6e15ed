/**
 * This node's connection to the cluster's Redis (CLUSTER.md §1, §8), through `@effect/platform-node`
 * `NodeRedis` (node-redis) and `effect/persistence/Redis`: the one service the cluster code uses.
 *
 * * Boot never fails for Redis: a supervisor fiber builds the client and retries every second,
 *   forever (`RedisConnection.ts`).
 * * Every call has a deadline (2 s) and fails fast while there is no connection; each call that
 *   gets no answer is counted under `cluster_redis_errors_total{op}` (`RedisCall.ts`).
 * * Health: a `TIME` every second; two misses in a row mark Redis down, the next answer marks it
 *   up again, and the same answer keeps an estimate of Redis's clock (`RedisHealth.ts`).
 * * Pub/sub runs on one dedicated subscriber connection per client (`RedisPubSub.ts`).
 * * node-redis's own error lines are not logged (one per reconnect attempt, and their text is not
 *   ours to vet); these modules log the transitions, with an error code at most. The URL's
 *   password is never logged: only `describeRedisUrl` text leaves them.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redis from "effect/persistence/Redis"
import type * as Scope from "effect/Scope"
import { RegistryUnavailable } from "../domain/Errors.ts"
import type { RedisOp } from "../observability/Metrics.ts"
import { CALL_DEADLINE, counted, NOT_CONNECTED, withDeadline } from "./RedisCall.ts"
import { type ClusterRedisOptions, type Connected, makeRedisConnection } from "./RedisConnection.ts"
import { makeRedisHealth } from "./RedisHealth.ts"
import { makeRedisPubSub } from "./RedisPubSub.ts"

export { RegistryUnavailable }
export { CALL_DEADLINE, reasonOf } from "./RedisCall.ts"
export { BOOT_WAIT, type ClusterRedisOptions, nodeRedisLayer } from "./RedisConnection.ts"

export interface ClusterRedisShape {
  /** Whether Redis answered the last health check (or missed fewer than two in a row). */
  readonly isUp: () => boolean
  /** One command, with its deadline; a failure is counted under `op`. */
  readonly send: <A = unknown>(op: RedisOp, command: string, ...args: ReadonlyArray<string>) => Effect.Effect<A, RegistryUnavailable>
  /** One script (`EVALSHA`, loaded once per connection and again after `NOSCRIPT`), with its deadline. */
  readonly eval: <C extends { readonly params: ReadonlyArray<unknown>; readonly result: unknown }>(
    op: RedisOp,
    script: Redis.Script<C>
  ) => (...params: C["params"]) => Effect.Effect<C["result"], RegistryUnavailable>
  /** Redis's clock now (ms), estimated from this node's `Clock` and the last health answer. */
  readonly redisTimeMillis: Effect.Effect<number>
  /**
   * Counts the connection's fresh starts: each (re)connect, each socket loss, and each return
   * after Redis was marked down. Redis may have restarted (empty) or this node's lease lapsed
   * meanwhile, so whatever was confirmed under an older generation must be confirmed again.
   */
  readonly generation: () => number
  /** Completes at the next change of `generation`. */
  readonly nextGeneration: Effect.Effect<void>
  /**
   * `PUBLISH` of bytes, with its deadline: how many subscribers got it (0: nobody listens on that
   * channel — for a node's inbox, the node is gone). Counted under `publish` when it fails.
   *
   * The command is queued at once, but `payload` is called only when the client writes it (at the
   * end of the event-loop turn, after whatever else the turn queued): what the caller adds until
   * then goes with it. Called at most once; never if the command is not written.
   */
  readonly publish: (channel: string, payload: () => Buffer) => Effect.Effect<number, RegistryUnavailable>
  /**
   * Receives the bytes published on `channel` for as long as the calling scope lives, across
   * reconnects and rebuilt clients (a dedicated subscriber connection per client; what is
   * published while it reconnects is lost, as pub/sub is).
   */
  readonly subscribe: (channel: string, onMessage: (payload: Buffer) => void) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Completes each time a subscriber connection (re)connects: whatever was published to this
   * node while it was away is lost, so what it may have missed must be checked again.
   */
  readonly nextSubscriberStart: Effect.Effect<void>
}

export class ClusterRedis extends Context.Service<ClusterRedis, ClusterRedisShape>()("pyrycode-relay/ClusterRedis") {}

/**
 * A command's arguments whose last is read only when the client encodes the command to write it
 * (node-redis encodes each queued command as it writes it, in order), and then once.
 */
const lazyArguments = (head: ReadonlyArray<string>, last: () => Buffer): Array<string | Buffer> => {
  const args: Array<string | Buffer> = [...head]
  let value: Buffer | undefined
  Object.defineProperty(args, head.length, { enumerable: true, get: () => (value ??= last()) })
  return args
}

export const makeClusterRedis = Effect.fnUntraced(function*(options: ClusterRedisOptions) {
  const connection = makeRedisConnection(options)
  const health = makeRedisHealth(connection.newGeneration)
  const pubsub = makeRedisPubSub(connection.current)
  yield* connection.start({ health, attachSubscriber: pubsub.attachSubscriber })

  /** `call` on the client there is now, with its deadline, counted under `op`; fails at once without one. */
  const onClient = <A>(op: RedisOp, call: (c: Connected) => Effect.Effect<A, Redis.RedisError>) =>
    counted(
      op,
      Effect.suspend(() => {
        const c = connection.current()
        return c === undefined ? Effect.fail(NOT_CONNECTED) : withDeadline(call(c), CALL_DEADLINE)
      })
    )

  const evalScript = <C extends { readonly params: ReadonlyArray<unknown>; readonly result: unknown }>(
    op: RedisOp,
    script: Redis.Script<C>
  ) =>
  (...params: C["params"]): Effect.Effect<C["result"], RegistryUnavailable> => onClient(op, (c) => c.redis.eval(script)(...params))

  return ClusterRedis.of({
    isUp: health.isUp,
    send: <A = unknown>(op: RedisOp, command: string, ...args: ReadonlyArray<string>) =>
      onClient(op, (c) => c.redis.send<A>(command, ...args)),
    eval: evalScript,
    redisTimeMillis: health.redisTimeMillis,
    generation: connection.generation,
    nextGeneration: connection.nextGeneration,
    publish: (channel, payload) =>
      onClient("publish", (c) =>
        Effect.tryPromise({
          try: () => c.node.client.sendCommand(lazyArguments(["PUBLISH", channel], payload)) as Promise<number>,
          catch: (cause) => new Redis.RedisError({ cause })
        })),
    nextSubscriberStart: pubsub.nextSubscriberStart,
    subscribe: pubsub.subscribe
  })
})

export const layer = (options: ClusterRedisOptions): Layer.Layer<ClusterRedis> =>
  Layer.effect(ClusterRedis, makeClusterRedis(options))
