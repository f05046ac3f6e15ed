/**
 * Push wake (PUSH.md): the binary forwarder hands each wake envelope to `request`, which decides
 * on the spot — validation, the server-id's bucket, the relay-wide in-flight cap — and, when the
 * wake is admitted, starts its send as a fiber of the relay, never of the binary's connection. A
 * wake requested just before the binary leaves is still sent; the relay's shutdown interrupts
 * what is still in flight (`Relay.ts` closes this layer after the public listener has drained).
 *
 * Every admitted wake ends in exactly one `push wake sent` / `push wake failed` line and one
 * count of its outcome, however it ends (reply, timeout, transport failure, interruption).
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import * as HttpClient from "effect/http/HttpClient"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { RelayConfig } from "../config/RelayConfig.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { makeAccessTokens } from "./AccessToken.ts"
import { makeAdmission } from "./Admission.ts"
import { fetchToken, sendUrl, sendWake } from "./FcmClient.ts"
import type { SendResult } from "./Outcome.ts"
import type { FcmCredentials } from "./ServiceAccount.ts"
import { HELD } from "../observability/PeerWarnings.ts"
import { readWakeRequest, tokenFingerprint } from "./WakeRequest.ts"

/** Who asked: the binary's server-id and connection id (for logs). */
export interface WakeSource {
  readonly serverId: string
  readonly connId: string
}

export interface PushWakeShape {
  /**
   * One wake envelope's `push_wake` object (its UTF-8), on the forwarder's pass: synchronous,
   * never waits. Returns the effect that logs (and, for the two limits, counts) a refusal, for
   * the forwarder to run after its pass; `undefined` when a send started. `admit` is the binary
   * connection's warning limiter (SPEC §11): a refusal's line is written only when it lets it.
   */
  readonly request: (source: WakeSource, pushWake: Uint8Array, admit?: WarningGate) => Effect.Effect<void> | undefined
}

/** A connection's peer-warning limiter: `HELD`, or how many lines of this reason were held back. */
export type WarningGate = (reason: string) => number

const dropped = (source: WakeSource, reason: string, admit: WarningGate | undefined): Effect.Effect<void> => {
  const suppressed = admit === undefined ? 0 : admit(reason)
  return suppressed === HELD
    ? Effect.void
    : Log.warn("push wake dropped", { server_id: source.serverId, binary_conn_id: source.connId, reason, suppressed })
}

/** Push is off: every wake is dropped (logged, not counted). */
export const pushOff: PushWakeShape = { request: (source, _pushWake, admit) => dropped(source, "push off", admit) }

/** The relay's push service; without the layer (a bare core in tests, an embedder's own wiring) push is off. */
export const PushWake = Context.Reference<PushWakeShape>("pyrycode-relay/PushWake", { defaultValue: () => pushOff })

export interface PushWakeOptions {
  readonly credentials: FcmCredentials
  readonly projectId: string
  /** FCM base URL, no trailing slash. */
  readonly endpoint: string
  readonly burst: number
  readonly refill: Duration.Duration
  readonly maxInFlight: number
  /** Per HTTP call (PUSH.md: 10 s); tests may shorten it. */
  readonly callTimeout?: Duration.Duration
}

/** An admitted wake, from admission to its one log line. */
interface Admitted {
  readonly serverId: string
  readonly tokenFp: string
  readonly startedAt: number
}

const INTERRUPTED: SendResult = { outcome: "send_failed", error: "interrupted" }

/** The service over `HttpClient`; its sends and the shared token fetch live in the current scope. */
export const makePushWake = (
  options: PushWakeOptions
): Effect.Effect<PushWakeShape, never, HttpClient.HttpClient | Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const clock = yield* Clock.Clock
    const timeout = options.callTimeout
    const tokens = yield* makeAccessTokens(
      Effect.flatMap(Clock.currentTimeMillis, (now) => fetchToken(client, options.credentials, now, timeout))
    )
    const target = { sendUrl: sendUrl(options.endpoint, options.projectId), tokens, ...(timeout ? { timeout } : {}) }
    const admission = makeAdmission({
      burst: options.burst,
      refillMillis: Duration.toMillis(options.refill),
      maxInFlight: options.maxInFlight
    })
    const sends = yield* FiberSet.make<void>()
    const run = yield* FiberSet.runtime(sends)()
    // Runs before the set's own finalizer (finalizers run in reverse): from then on a wake that
    // gets through admission is reported as interrupted at once instead of being forked into a
    // closed set, where it would vanish without its outcome.
    let closed = false
    yield* Effect.addFinalizer(() => Effect.sync(() => (closed = true)))

    const finish = (wake: Admitted, result: SendResult): Effect.Effect<void> =>
      Effect.suspend(() => {
        admission.release()
        const fields = {
          server_id: wake.serverId,
          token_fp: wake.tokenFp,
          duration: Duration.format(Duration.millis(clock.currentTimeMillisUnsafe() - wake.startedAt))
        }
        return Effect.andThen(
          Metric.update(Metrics.pushWakes[result.outcome], 1),
          result.outcome === "sent"
            ? Log.info("push wake sent", result.messageId === undefined ? fields : { ...fields, fcm_message_id: result.messageId })
            : Log.warn("push wake failed", { ...fields, reason: result.outcome, error: result.error })
        )
      })

    const send = (wake: Admitted, deviceToken: string): Effect.Effect<void> =>
      sendWake(client, target, deviceToken).pipe(
        Effect.onExit((exit) =>
          finish(
            wake,
            Exit.isSuccess(exit)
              ? exit.value
              : Cause.hasInterrupts(exit.cause)
              ? INTERRUPTED
              : { outcome: "send_failed", error: "internal error" }
          )
        ),
        Effect.asVoid
      )

    const request = (source: WakeSource, pushWake: Uint8Array, admit?: WarningGate): Effect.Effect<void> | undefined => {
      const wake = readWakeRequest(pushWake)
      if (wake._tag === "Refused") return dropped(source, wake.reason, admit)
      const now = clock.currentTimeMillisUnsafe()
      const refusal = admission.admit(source.serverId, now)
      if (refusal !== undefined) {
        return Effect.andThen(Metric.update(Metrics.pushWakes.dropped, 1), dropped(source, refusal, admit))
      }
      const admitted: Admitted = { serverId: source.serverId, tokenFp: tokenFingerprint(wake.token), startedAt: now }
      if (closed) return finish(admitted, INTERRUPTED)
      run(send(admitted, wake.token))
      return undefined
    }

    return { request }
  })

/** Push from `RelayConfig`: off (logged once) without credentials, else FCM over node:http. */
export const layer: Layer.Layer<never, never, RelayConfig> = Layer.effect(
  PushWake,
  Effect.gen(function*() {
    const config = yield* RelayConfig
    if (config.fcmCredentials === undefined) {
      yield* Log.info("push off", { reason: "credentials unset" })
      return pushOff
    }
    // The client's agents live as long as this layer (built only when push is on).
    const http = yield* Layer.build(NodeHttpClient.layerNodeHttp)
    return yield* makePushWake({
      credentials: config.fcmCredentials,
      projectId: config.fcmProjectId,
      endpoint: config.fcmEndpoint,
      burst: config.pushBurst,
      refill: config.pushRefill,
      maxInFlight: config.pushMaxInFlight
    }).pipe(Effect.provideService(HttpClient.HttpClient, Context.get(http, HttpClient.HttpClient)))
  })
)
