/**
 * This node's connection to the cluster's Redis (CLUSTER.md §1, §8), through `@effect/platform-node`
 * `NodeRedis` (node-redis) and `effect/persistence/Redis`.
 *
 * * Boot never fails for Redis: the connection is built by a supervisor fiber that retries every
 *   second, forever; the layer waits at most 5 s for the first attempt, then the relay starts
 *   anyway (answering `/readyz` 503 until Redis answers).
 * * Every call has a deadline (2 s) and fails fast while there is no connection (node-redis's
 *   offline queue is off, so nothing waits behind a reconnect); each call that gets no answer is
 *   counted under `cluster_redis_errors_total{op}`.
 * * Health: a `TIME` every second with a 1 s deadline. Two misses in a row mark Redis down
 *   (`cluster_redis_up` 0, `/readyz` 503, upgrades 503); the next answer marks it up again. The
 *   same answer keeps an estimate of Redis's clock against this node's `Clock`.
 * * node-redis's own error lines are not logged (one per reconnect attempt, and their text is not
 *   ours to vet); this module logs the transitions, with an error code at most. The URL's
 *   password is never logged: only `describeRedisUrl` text leaves this module.
 */
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as Redis from "effect/persistence/Redis"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import type { RedisUrl } from "../config/RedisUrl.ts"
import { RegistryUnavailable } from "../domain/Errors.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { RedisOp } from "../observability/Metrics.ts"

export { RegistryUnavailable }

/** CLUSTER.md §8: every Redis call has a deadline, at most 2 s on the upgrade path. */
export const CALL_DEADLINE = Duration.seconds(2)
/** CLUSTER.md §1: how long boot waits for Redis before starting without it. */
export const BOOT_WAIT = Duration.seconds(5)
const HEALTH_INTERVAL = Duration.seconds(1)
const HEALTH_DEADLINE = Duration.seconds(1)
const RECONNECT_DELAY = Duration.seconds(1)
/** Consecutive health misses that mark Redis down (one slow answer is not an outage). */
const MISSES_FOR_DOWN = 2

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

type NodeRedisClient = NodeRedis.NodeRedis["Service"]["client"]

interface Connected {
  readonly redis: Redis.Redis["Service"]
  readonly node: NodeRedis.NodeRedis["Service"]
  readonly scope: Scope.Closeable
  /** The client's subscriber connection (node-redis resubscribes it after a reconnect). */
  subscriber: NodeRedisClient | undefined
}

/** A code for the log and the error, never the error's message text. */
export const reasonOf = (cause: unknown): string => {
  let inner = cause instanceof Redis.RedisError ? cause.cause : cause
  // node-redis wraps a failed (re)connect: the socket's own error says what happened.
  for (let depth = 0; depth < 3 && typeof inner === "object" && inner !== null; depth++) {
    const wrapped = (inner as { socketError?: unknown; originalError?: unknown })
    const next = wrapped.socketError ?? wrapped.originalError
    if (next === undefined) break
    inner = next
  }
  if (typeof inner === "object" && inner !== null) {
    const code = (inner as { code?: unknown }).code
    if (typeof code === "string" && /^[A-Z0-9_]{1,32}$/.test(code)) return code
    // node-redis's own errors keep the name `Error`; their class says what happened.
    const named = (inner as { name?: unknown }).name
    const name = named === "Error" ? (inner as { constructor?: { name?: unknown } }).constructor?.name : named
    if (typeof name === "string" && /^[A-Za-z]{1,40}$/.test(name)) return name
  }
  return "error"
}

const withDeadline = <A>(
  call: Effect.Effect<A, Redis.RedisError>,
  deadline: Duration.Duration
): Effect.Effect<A, RegistryUnavailable> =>
  call.pipe(
    Effect.mapError((error) => new RegistryUnavailable({ reason: reasonOf(error) })),
    Effect.timeoutOrElse({
      duration: deadline,
      orElse: () => Effect.fail(new RegistryUnavailable({ reason: "deadline" }))
    })
  )

const NOT_CONNECTED = new RegistryUnavailable({ reason: "not connected" })

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

export interface ClusterRedisOptions {
  readonly url: RedisUrl
  /** Builds the client; the relay's is `NodeRedis.layer`, tests may wrap it. */
  readonly connect?: (url: RedisUrl) => Layer.Layer<Redis.Redis | NodeRedis.NodeRedis, Redis.RedisError>
}

/** node-redis over `url`: commands fail at once while it reconnects, instead of queueing behind it. */
export const nodeRedisLayer = (url: RedisUrl) =>
  NodeRedis.layer({ url: Redacted.value(url), disableOfflineQueue: true, socket: { connectTimeout: 5_000 } }).pipe(
    // node-redis reports every reconnect attempt as an error event, which NodeRedis logs; the
    // transitions this module logs say the same once.
    Layer.provide(Logger.layer([]))
  )

export const makeClusterRedis = Effect.fnUntraced(function*(options: ClusterRedisOptions) {
  const connect = options.connect ?? nodeRedisLayer
  let connected: Connected | undefined
  /** `unknown` until the first attempt; each change to `up` or `down` is logged once. */
  let health: "unknown" | "up" | "down" = "unknown"
  let misses = 0
  /** Redis's clock minus ours, from the last health answer. */
  let offsetMillis = 0
  const firstAttempt = yield* Deferred.make<void>()
  /** Every live subscription; each client gets a subscriber connection for all of them. */
  const subscriptions = new Set<{ readonly channel: string; readonly onMessage: (payload: Buffer) => void }>()
  let subscriberStarted = Deferred.makeUnsafe<void>()
  const subscriberStart = () => {
    const started = subscriberStarted
    subscriberStarted = Deferred.makeUnsafe<void>()
    Deferred.doneUnsafe(started, Effect.void)
  }
  let generation = 0
  let generationChanged = Deferred.makeUnsafe<void>()
  const newGeneration = () => {
    generation++
    const changed = generationChanged
    generationChanged = Deferred.makeUnsafe<void>()
    Deferred.doneUnsafe(changed, Effect.void)
  }

  const countError = (op: RedisOp) => Metric.update(Metrics.clusterRedisErrors[op], 1)

  const counted = <A>(op: RedisOp, call: Effect.Effect<A, RegistryUnavailable>) =>
    Effect.tapError(call, (error) =>
      Effect.andThen(countError(op), Log.debug("cluster redis call failed", { endpoint: op, error: error.reason })))

  const send = <A = unknown>(op: RedisOp, command: string, ...args: ReadonlyArray<string>) =>
    counted(
      op,
      Effect.suspend(() =>
        connected === undefined
          ? Effect.fail(NOT_CONNECTED)
          : withDeadline(connected.redis.send<A>(command, ...args), CALL_DEADLINE)
      )
    )

  const evalScript = <C extends { readonly params: ReadonlyArray<unknown>; readonly result: unknown }>(
    op: RedisOp,
    script: Redis.Script<C>
  ) =>
  (...params: C["params"]): Effect.Effect<C["result"], RegistryUnavailable> =>
    counted(
      op,
      Effect.suspend(() =>
        connected === undefined
          ? Effect.fail(NOT_CONNECTED)
          : withDeadline(connected.redis.eval(script)(...params), CALL_DEADLINE)
      )
    )

  /** The subscriber connection of `c`, made once, closed with `c`'s scope. */
  const subscriberOf = (c: Connected) =>
    Effect.suspend(() => {
      if (c.subscriber !== undefined) return Effect.succeed(c.subscriber)
      return Effect.map(
        Effect.acquireRelease(
          Effect.tryPromise({
            try: async () => {
              const subscriber = c.node.client.duplicate()
              subscriber.on("error", () => {})
              // node-redis subscribes again after a reconnect; messages in between are lost.
              subscriber.on("ready", subscriberStart)
              await subscriber.connect()
              return subscriber
            },
            catch: (cause) => new RegistryUnavailable({ reason: reasonOf(cause) })
          }),
          (subscriber) => Effect.sync(() => subscriber.destroy())
        ).pipe(Scope.provide(c.scope)),
        (subscriber) => (c.subscriber = subscriber)
      )
    })

  const listen = (subscriber: NodeRedisClient, channel: string, onMessage: (payload: Buffer) => void) =>
    Effect.tryPromise({
      try: () => subscriber.subscribe(channel, (message: Buffer) => onMessage(message), true),
      catch: (cause) => new RegistryUnavailable({ reason: reasonOf(cause) })
    })

  /** A new client: every live subscription is made on its subscriber connection. */
  const attachSubscriber = (c: Connected) =>
    Effect.gen(function*() {
      if (subscriptions.size === 0) return
      const subscriber = yield* subscriberOf(c)
      for (const s of subscriptions) yield* listen(subscriber, s.channel, s.onMessage)
    })

  const markUp = Effect.suspend(() => {
    misses = 0
    if (health === "up") return Effect.void
    if (health === "down") newGeneration()
    health = "up"
    return Effect.andThen(Metric.update(Metrics.clusterRedisUp, 1), Log.info("cluster redis up"))
  })

  const markDown = (reason: string) =>
    Effect.suspend(() => {
      if (health === "down") return Effect.void
      health = "down"
      return Effect.andThen(Metric.update(Metrics.clusterRedisUp, 0), Log.warn("cluster redis down", { error: reason }))
    })

  /** A missed health check: down at the second in a row (or at once, before Redis was ever up). */
  const markMiss = (reason: string) =>
    Effect.suspend(() => {
      misses++
      return health === "up" && misses < MISSES_FOR_DOWN ? Effect.void : markDown(reason)
    })

  /** One health check: `TIME`, which also refreshes the clock offset. */
  const check = (c: Connected) =>
    Effect.gen(function*() {
      const sent = yield* Clock.currentTimeMillis
      const answer = yield* Effect.exit(withDeadline(c.redis.send<[string, string]>("TIME"), HEALTH_DEADLINE))
      if (Exit.isSuccess(answer)) {
        const received = yield* Clock.currentTimeMillis
        const [seconds, micros] = answer.value
        offsetMillis = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - Math.round((sent + received) / 2)
        return yield* markUp
      }
      yield* countError("health")
      const error = answer.cause.reasons.find((r) => r._tag === "Fail")?.error
      yield* markMiss(error?.reason ?? "error")
    })

  /** Builds a client; `undefined` when Redis cannot be reached (counted, logged once per outage). */
  const open = Effect.gen(function*() {
    const scope = yield* Scope.make()
    const built = yield* Effect.exit(
      Layer.buildWithScope(connect(options.url), scope).pipe(
        Effect.timeoutOrElse({
          duration: BOOT_WAIT,
          orElse: () => Effect.fail(new Redis.RedisError({ cause: { code: "ETIMEDOUT" } }))
        })
      )
    )
    if (Exit.isSuccess(built)) {
      const node = Context.get(built.value, NodeRedis.NodeRedis)
      newGeneration()
      // node-redis reconnects a broken socket by itself; the Redis it reaches may be a new one,
      // so whatever was confirmed before the socket broke is not trusted from that moment on.
      node.client.on("reconnecting", newGeneration)
      node.client.on("ready", newGeneration)
      const opened: Connected = { redis: Context.get(built.value, Redis.Redis), node, scope, subscriber: undefined }
      yield* Effect.ignore(attachSubscriber(opened))
      return opened
    }
    yield* Scope.close(scope, Exit.void)
    yield* countError("connect")
    const error = built.cause.reasons.find((r) => r._tag === "Fail")?.error
    yield* markDown(reasonOf(error))
    return undefined
  })

  const supervise = Effect.gen(function*() {
    while (true) {
      const opened = yield* open
      if (opened === undefined) {
        yield* Deferred.succeed(firstAttempt, undefined)
        yield* Effect.sleep(RECONNECT_DELAY)
        continue
      }
      connected = opened
      yield* check(opened)
      yield* Deferred.succeed(firstAttempt, undefined)
      // node-redis reconnects a broken socket by itself; a client that gave up is rebuilt.
      while (opened.node.client.isOpen) {
        yield* Effect.sleep(HEALTH_INTERVAL)
        yield* check(opened)
      }
      connected = undefined
      yield* Scope.close(opened.scope, Exit.void)
    }
  })

  yield* Effect.forkScoped(supervise)
  yield* Effect.addFinalizer(() =>
    Effect.suspend(() => connected === undefined ? Effect.void : Scope.close(connected.scope, Exit.void))
  )
  // Boot waits for the first attempt (at most the connect timeout), never longer.
  yield* Effect.timeoutOption(Deferred.await(firstAttempt), Duration.sum(BOOT_WAIT, Duration.seconds(1)))

  return ClusterRedis.of({
    isUp: () => health === "up",
    send,
    eval: evalScript,
    redisTimeMillis: Effect.map(Clock.currentTimeMillis, (now) => now + offsetMillis),
    generation: () => generation,
    nextGeneration: Effect.suspend(() => Deferred.await(generationChanged)),
    publish: (channel, payload) =>
      counted(
        "publish",
        Effect.suspend(() => {
          const c = connected
          if (c === undefined) return Effect.fail(NOT_CONNECTED)
          return withDeadline(
            Effect.tryPromise({
              try: () => c.node.client.sendCommand(lazyArguments(["PUBLISH", channel], payload)) as Promise<number>,
              catch: (cause) => new Redis.RedisError({ cause })
            }),
            CALL_DEADLINE
          )
        })
      ),
    nextSubscriberStart: Effect.suspend(() => Deferred.await(subscriberStarted)),
    subscribe: (channel, onMessage) =>
      Effect.gen(function*() {
        const subscription = { channel, onMessage }
        subscriptions.add(subscription)
        yield* Effect.addFinalizer(() => Effect.sync(() => subscriptions.delete(subscription)))
        // On the client there is now; a client built later subscribes it when it opens.
        const c = connected
        if (c === undefined) return
        yield* Effect.ignore(Effect.flatMap(subscriberOf(c), (subscriber) => listen(subscriber, channel, onMessage)))
      })
  })
})

export const layer = (options: ClusterRedisOptions): Layer.Layer<ClusterRedis> =>
  Layer.effect(ClusterRedis, makeClusterRedis(options))
