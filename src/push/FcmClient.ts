/**
 * The two HTTP calls of a wake (PUSH.md §3): the token request and `messages:send`, through
 * Effect's `HttpClient`. Each call: 10 s for the whole exchange (reply body included), redirects
 * never followed (the node:http client does not follow them, and nothing here adds
 * `followRedirects`), at most 4 KiB of any reply read — the rest is never pulled, and the request
 * is aborted when the call ends, so a 1 MiB reply costs 4 KiB.
 *
 * Failures are data with fixed-shape descriptions: a transport error is named by its Node error
 * code at most, never by its message (which can quote a host or a header).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { constTrue } from "effect/Function"
import * as Stream from "effect/Stream"
import * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import type { AccessTokens, TokenFetchFailed } from "./AccessToken.ts"
import { signAssertion } from "./Jwt.ts"
import { classifyFcmReply, readTokenReply, type SendResult, type TokenGrant } from "./Outcome.ts"
import type { FcmCredentials } from "./ServiceAccount.ts"

export const CALL_TIMEOUT: Duration.Duration = Duration.seconds(10)
export const MAX_REPLY_BYTES = 4096

const JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
const ENUM = /^[A-Z0-9_]{1,64}$/

export interface Reply {
  readonly status: number
  /** At most `MAX_REPLY_BYTES` of the body. */
  readonly body: Uint8Array
}

/** Why a call produced no reply. */
export type CallFailure = { readonly _tag: "Timeout" } | { readonly _tag: "Transport"; readonly code: string | undefined }

/** The first `max` bytes of `stream`; stops pulling once it has them. */
export const readAtMost = <E>(stream: Stream.Stream<Uint8Array, E>, max: number): Effect.Effect<Uint8Array, E> =>
  Effect.suspend(() => {
    let total = 0
    return stream.pipe(
      Stream.takeUntil((chunk) => (total += chunk.length) >= max),
      Stream.runCollect,
      Effect.map((chunks) => Buffer.concat(chunks).subarray(0, max))
    )
  })

/** A Node error code (`ECONNREFUSED`, …) when the failure carries one: enum-shaped, never free text. */
const errorCode = (error: HttpClientError.HttpClientError): string | undefined => {
  const cause = "cause" in error.reason ? error.reason.cause : undefined
  const code = typeof cause === "object" && cause !== null ? (cause as { code?: unknown }).code : undefined
  return typeof code === "string" && ENUM.test(code) ? code : undefined
}

/**
 * One exchange: request, status, at most 4 KiB of body, within `timeout` (from `Clock`). The
 * request's scope aborts it when the call ends, however it ends: a half-read reply, a timeout
 * or an interruption never leaves a socket open.
 */
export const call = (
  client: HttpClient.HttpClient,
  request: HttpClientRequest.HttpClientRequest,
  timeout: Duration.Duration = CALL_TIMEOUT
): Effect.Effect<Reply, CallFailure> =>
  Effect.scoped(
    Effect.flatMap(HttpClient.withScope(client).execute(request), (response) =>
      Effect.map(readAtMost(response.stream, MAX_REPLY_BYTES), (body): Reply => ({ status: response.status, body })))
  ).pipe(
    Effect.mapError((error): CallFailure => ({ _tag: "Transport", code: errorCode(error) })),
    Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.fail<CallFailure>({ _tag: "Timeout" }) }),
    // No spans and no trace headers: nothing about a wake goes anywhere but to Google.
    Effect.provideService(HttpClient.TracerDisabledWhen, constTrue)
  )

const describe = (failure: CallFailure): string =>
  failure._tag === "Timeout" ? "timeout" : failure.code === undefined ? "transport error" : `transport error ${failure.code}`

/** The token request: a fresh JWT exchanged for an access token (PUSH.md §3.1). */
export const fetchToken = (
  client: HttpClient.HttpClient,
  credentials: FcmCredentials,
  nowMillis: number,
  timeout?: Duration.Duration
): Effect.Effect<TokenGrant, TokenFetchFailed> => {
  const request = HttpClientRequest.post(credentials.tokenUri).pipe(
    HttpClientRequest.bodyUrlParams({
      grant_type: JWT_BEARER,
      assertion: signAssertion(credentials, Math.floor(nowMillis / 1000))
    })
  )
  return call(client, request, timeout).pipe(
    Effect.mapError((failure): TokenFetchFailed => ({
      _tag: "TokenFetchFailed",
      error: `token endpoint ${describe(failure)}`
    })),
    Effect.flatMap((reply) => {
      const grant = readTokenReply(reply.status, reply.body)
      return typeof grant === "string" ? Effect.fail<TokenFetchFailed>({ _tag: "TokenFetchFailed", error: grant }) : Effect.succeed(grant)
    })
  )
}

/** `{"message":{"token":"<device token>","android":{"priority":"HIGH"}}}`: data-only, nothing of the session. */
export const messageBody = (deviceToken: string): string =>
  JSON.stringify({ message: { token: deviceToken, android: { priority: "HIGH" } } })

export interface FcmTarget {
  /** `{endpoint}/v1/projects/{project}/messages:send`. */
  readonly sendUrl: string
  readonly tokens: AccessTokens
  readonly timeout?: Duration.Duration
}

export const sendUrl = (endpoint: string, projectId: string): string =>
  `${endpoint}/v1/projects/${encodeURIComponent(projectId)}/messages:send`

/**
 * One wake's whole send: an access token (cached or shared), then the message. Never fails: every
 * way it can end is a `SendResult`. Interruption is the caller's to report.
 */
export const sendWake = (
  client: HttpClient.HttpClient,
  target: FcmTarget,
  deviceToken: string
): Effect.Effect<SendResult> =>
  target.tokens.get.pipe(
    Effect.matchEffect({
      onFailure: (failure): Effect.Effect<SendResult> =>
        Effect.succeed({ outcome: "token_fetch_failed", error: failure.error }),
      onSuccess: (accessToken) => {
        const request = HttpClientRequest.post(target.sendUrl).pipe(
          HttpClientRequest.bearerToken(accessToken),
          HttpClientRequest.bodyText(messageBody(deviceToken), "application/json")
        )
        return call(client, request, target.timeout).pipe(
          Effect.matchEffect({
            onFailure: (failure): Effect.Effect<SendResult> =>
              Effect.succeed({ outcome: "send_failed", error: describe(failure) }),
            onSuccess: (reply) =>
              // A 401 means the token is no good (revoked, or expired early): the next send fetches anew.
              Effect.as(
                reply.status === 401 ? target.tokens.invalidate(accessToken) : Effect.void,
                classifyFcmReply(reply.status, reply.body)
              )
          })
        )
      }
    })
  )
