/**
 * The FCM access token (PUSH.md §3.1): fetched when needed, reused until 5 minutes before it
 * expires, one fetch shared by every send that needs it meanwhile, dropped when FCM answers 401.
 *
 * State ownership: `cached` and `pending` live here and change only inside synchronous steps
 * (`Effect.suspend` bodies and the fetch's completion), so two sends can never both decide to
 * fetch. The shared fetch runs in the owner's scope, not in the send that started it: a waiting
 * send that is interrupted does not take the others' token with it.
 *
 * The token is a credential: it only ever leaves through `get`, into an `Authorization` header.
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Scope from "effect/Scope"
import type { TokenGrant } from "./Outcome.ts"

/** A token is not used in its last 5 minutes (clock skew, and a send's own duration). */
export const REFRESH_MARGIN_MILLIS = 5 * 60_000

/** A token fetch that failed; `error` is a fixed-shape description (status only). */
export interface TokenFetchFailed {
  readonly _tag: "TokenFetchFailed"
  readonly error: string
}

export interface AccessTokens {
  /** A token good for at least 5 more minutes; fetches one (shared) when there is none. */
  readonly get: Effect.Effect<string, TokenFetchFailed>
  /** FCM refused `token` (401): forget it, unless a newer one already replaced it. */
  readonly invalidate: (token: string) => Effect.Effect<void>
}

interface Cached {
  readonly token: string
  /** From this instant on (ms), the token is not handed out any more. */
  readonly refreshAt: number
}

/**
 * `fetch` asks the token endpoint once (it signs a fresh JWT each time). Its expiry is counted
 * from when the fetch started, so a slow reply can only make the token retire early.
 */
export const makeAccessTokens = (
  fetch: Effect.Effect<TokenGrant, TokenFetchFailed>
): Effect.Effect<AccessTokens, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const clock = yield* Clock.Clock
    let cached: Cached | undefined
    let pending: Deferred.Deferred<string, TokenFetchFailed> | undefined

    /** The shared fetch: settles `done` for every waiter and caches what it got. */
    const fetchInto = (done: Deferred.Deferred<string, TokenFetchFailed>, startedAt: number) =>
      fetch.pipe(
        Effect.onExit((exit) =>
          Effect.suspend(() => {
            pending = undefined
            if (Exit.isFailure(exit)) return Deferred.failCause(done, exit.cause)
            // A token whose life is within the margin (or unknown) serves the waiting sends only.
            const refreshAt = startedAt + exit.value.expiresIn * 1000 - REFRESH_MARGIN_MILLIS
            cached = refreshAt > startedAt ? { token: exit.value.accessToken, refreshAt } : undefined
            return Deferred.succeed(done, exit.value.accessToken)
          })
        )
      )

    const get: Effect.Effect<string, TokenFetchFailed> = Effect.suspend(() => {
      const now = clock.currentTimeMillisUnsafe()
      if (cached !== undefined && now < cached.refreshAt) return Effect.succeed(cached.token)
      cached = undefined
      if (pending !== undefined) return Deferred.await(pending)
      const done = Deferred.makeUnsafe<string, TokenFetchFailed>()
      pending = done
      return Effect.andThen(Effect.forkIn(fetchInto(done, now), scope), Deferred.await(done))
    })

    const invalidate = (token: string) =>
      Effect.sync(() => {
        if (cached?.token === token) cached = undefined
      })

    return { get, invalidate }
  })
