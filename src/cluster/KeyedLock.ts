/**
 * One lock per server-id on this node. A cluster transition is a Redis script and then a change
 * of the local table, with a wait between them; transitions of one server-id must not
 * interleave on a node (a claim racing its own slot's release or expiry), while different
 * server-ids never wait on each other. An entry lives only while someone holds or waits for it.
 */
import * as Effect from "effect/Effect"
import * as Semaphore from "effect/Semaphore"

export type KeyedLock = <A, E, R>(key: string, effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

export const makeKeyedLock = (): KeyedLock => {
  const locks = new Map<string, { readonly semaphore: Semaphore.Semaphore; users: number }>()
  return (key, effect) =>
    Effect.suspend(() => {
      let entry = locks.get(key)
      if (entry === undefined) {
        entry = { semaphore: Semaphore.makeUnsafe(1), users: 0 }
        locks.set(key, entry)
      }
      entry.users++
      const held = entry
      return Effect.ensuring(
        held.semaphore.withPermits(1)(effect),
        Effect.sync(() => {
          if (--held.users === 0) locks.delete(key)
        })
      )
    })
}
