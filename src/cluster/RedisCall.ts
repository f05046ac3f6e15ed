/**
 * One call to the cluster's Redis (CLUSTER.md §8): every call has a deadline (2 s) and fails fast
 * while there is no connection (node-redis's offline queue is off, so nothing waits behind a
 * reconnect); each call that gets no answer is counted under `cluster_redis_errors_total{op}`.
 * What leaves this module about a failure is an error code at most, never an error's message
 * text (not ours to vet).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Redis from "effect/persistence/Redis"
import { RegistryUnavailable } from "../domain/Errors.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { RedisOp } from "../observability/Metrics.ts"

/** CLUSTER.md §8: every Redis call has a deadline, at most 2 s on the upgrade path. */
export const CALL_DEADLINE = Duration.seconds(2)

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

export const withDeadline = <A>(
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

export const NOT_CONNECTED = new RegistryUnavailable({ reason: "not connected" })

export const countError = (op: RedisOp) => Metric.update(Metrics.clusterRedisErrors[op], 1)

/** `call`, its failure counted under `op` and logged at debug level with its code. */
export const counted = <A>(op: RedisOp, call: Effect.Effect<A, RegistryUnavailable>) =>
  Effect.tapError(call, (error) =>
    Effect.andThen(countError(op), Log.debug("cluster redis call failed", { endpoint: op, error: error.reason })))
