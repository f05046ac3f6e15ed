/**
 * The connection supervisor of the cluster's Redis (CLUSTER.md §1): boot never fails for Redis.
 * A supervisor fiber builds the client (node-redis through `NodeRedis`) and retries every second,
 * forever; boot waits at most 5 s for the first attempt, then the relay starts anyway (answering
 * `/readyz` 503 until Redis answers). node-redis reconnects a broken socket by itself; a client
 * that gave up is rebuilt by the same loop, which also runs the health checks.
 *
 * node-redis's own error lines are not logged (one per reconnect attempt, and their text is not
 * ours to vet); the health transitions are logged instead. The URL's password is never logged.
 */
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Redis from "effect/persistence/Redis"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import type { RedisUrl } from "../config/RedisUrl.ts"
import type { RegistryUnavailable } from "../domain/Errors.ts"
import { countError, reasonOf } from "./RedisCall.ts"
import { HEALTH_INTERVAL, type RedisHealth } from "./RedisHealth.ts"
import { makeSignal } from "./Signal.ts"

/** CLUSTER.md §1: how long boot waits for Redis before starting without it. */
export const BOOT_WAIT = Duration.seconds(5)
const RECONNECT_DELAY = Duration.seconds(1)

export type NodeRedisClient = NodeRedis.NodeRedis["Service"]["client"]

export interface Connected {
  readonly redis: Redis.Redis["Service"]
  readonly node: NodeRedis.NodeRedis["Service"]
  readonly scope: Scope.Closeable
  /** The client's subscriber connection (node-redis resubscribes it after a reconnect). */
  subscriber: NodeRedisClient | undefined
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
    // transitions the health checks log say the same once.
    Layer.provide(Logger.layer([]))
  )

export interface ConnectionHooks {
  readonly health: Pick<RedisHealth, "check" | "markDown">
  /** A client was built: its subscriber connection is made for the live subscriptions. */
  readonly attachSubscriber: (c: Connected) => Effect.Effect<void, RegistryUnavailable>
}

export const makeRedisConnection = (options: ClusterRedisOptions) => {
  const connect = options.connect ?? nodeRedisLayer
  let connected: Connected | undefined
  let generation = 0
  const generationChanged = makeSignal()
  const newGeneration = () => {
    generation++
    generationChanged.fire()
  }

  /**
   * Starts the supervisor in the calling scope; completes after its first attempt (at most the
   * connect timeout), never later, whatever that attempt met.
   */
  const start = Effect.fnUntraced(function*({ health, attachSubscriber }: ConnectionHooks) {
    const firstAttempt = yield* Deferred.make<void>()

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
      yield* health.markDown(reasonOf(error))
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
        yield* health.check(opened)
        yield* Deferred.succeed(firstAttempt, undefined)
        // node-redis reconnects a broken socket by itself; a client that gave up is rebuilt.
        while (opened.node.client.isOpen) {
          yield* Effect.sleep(HEALTH_INTERVAL)
          yield* health.check(opened)
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
  })

  return {
    /** The client there is now; `undefined` between a client that gave up and its rebuild. */
    current: () => connected,
    generation: () => generation,
    nextGeneration: generationChanged.next,
    /** A fresh start: whatever was confirmed under an older generation must be confirmed again. */
    newGeneration,
    start
  }
}
