/**
 * Pub/sub on the cluster's Redis: each client gets one dedicated subscriber connection (a
 * duplicate of it, closed with it) carrying every live subscription, made again on each client
 * the supervisor builds. node-redis resubscribes that connection after a reconnect; what is
 * published meanwhile is lost, as pub/sub is, so each (re)connect is announced for the callers
 * to check again what they may have missed.
 */
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import { RegistryUnavailable } from "../domain/Errors.ts"
import { reasonOf } from "./RedisCall.ts"
import type { Connected, NodeRedisClient } from "./RedisConnection.ts"
import { makeSignal } from "./Signal.ts"

/** `current`: the client there is now, if any. */
export const makeRedisPubSub = (current: () => Connected | undefined) => {
  /** Every live subscription; each client gets a subscriber connection for all of them. */
  const subscriptions = new Set<{ readonly channel: string; readonly onMessage: (payload: Buffer) => void }>()
  const subscriberStarted = makeSignal()

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
              subscriber.on("ready", subscriberStarted.fire)
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

  const subscribe = (channel: string, onMessage: (payload: Buffer) => void): Effect.Effect<void, never, Scope.Scope> =>
    Effect.gen(function*() {
      const subscription = { channel, onMessage }
      subscriptions.add(subscription)
      yield* Effect.addFinalizer(() => Effect.sync(() => subscriptions.delete(subscription)))
      // On the client there is now; a client built later subscribes it when it opens.
      const c = current()
      if (c === undefined) return
      yield* Effect.ignore(Effect.flatMap(subscriberOf(c), (subscriber) => listen(subscriber, channel, onMessage)))
    })

  return {
    attachSubscriber,
    subscribe,
    nextSubscriberStart: subscriberStarted.next
  }
}
