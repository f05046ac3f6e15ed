/**
 * Admission of one upgrade request to `/v1/server` or `/v1/client` (SPEC §1.2 order): draining,
 * rate limit, caps, required headers, handshake; then the WebSocket upgrade with `ws` in
 * `noServer` mode. A refused request is answered with a plain HTTP status and never touches the
 * registry. The same admission runs on the relay's own listener and on an application's server.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as Http from "node:http"
import type * as Stream from "node:stream"
import type { WebSocketServer } from "ws"
import type WebSocket from "ws"
import { RelayConfig } from "../config/RelayConfig.ts"
import { clientIp } from "../limits/ClientIp.ts"
import { ConnectionCaps } from "../limits/ConnectionCaps.ts"
import { RateLimiter } from "../limits/RateLimiter.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { Endpoint } from "../observability/Metrics.ts"
import { limited, makePeerWarnings } from "../observability/PeerWarnings.ts"
import { Availability } from "../lifecycle/Availability.ts"
import { Lifecycle } from "../lifecycle/Lifecycle.ts"
import type * as Session from "../session/Session.ts"
import type { ConnectionHold } from "./ConnectionHold.ts"
import { afterEarlierResponses } from "./EarlierResponses.ts"
import { rejectUpgrade } from "./RejectUpgrade.ts"
import { type DistinctHeaders, endpointOf, handshakeRefusal, hasRequiredHeaders, headerValue, pathOf } from "./UpgradeGate.ts"

/** Runs one admitted connection's session on its upgraded socket. */
export type StartSession<R> = (start: Session.SessionStart, ws: WebSocket) => Effect.Effect<void, never, R>

/**
 * The gate, then the upgrade; returns the session to run. What it takes it records in `hold`
 * (`holding` gives it back): the cap slot is held for the handler's whole life, rejects and probe
 * included (§7.2), and released however the handler ends — a refusal, a session's end, a defect
 * or interruption.
 */
export type Admit<R> = (
  hold: ConnectionHold,
  req: Http.IncomingMessage,
  socket: Stream.Duplex,
  head: Buffer
) => Effect.Effect<Effect.Effect<void, never, R>>

/** A rejected upgrade: answered at once, nothing left to run. */
const rejected = (socket: Stream.Duplex, status: number): Effect.Effect<void> => {
  rejectUpgrade(socket, status)
  return Effect.void
}

/** The header values a session keeps (the gate has checked the required ones are there, once each). */
const sessionStart = (endpoint: Endpoint, headers: DistinctHeaders): Session.SessionStart => {
  const serverId = headerValue(headers, "x-pyrycode-server")!
  return endpoint === "server"
    ? { endpoint, info: { serverId, version: headerValue(headers, "x-pyrycode-version")! } }
    : { endpoint, info: { serverId, deviceName: headerValue(headers, "x-pyrycode-device-name") } }
}

/** The WebSocket handshake; `undefined` when `ws` refused it or the socket went away first. */
const upgrade = (wss: WebSocketServer, req: Http.IncomingMessage, socket: Stream.Duplex, head: Buffer) =>
  Effect.callback<WebSocket | undefined>((resume) => {
    // A socket already gone never emits `close` again, and `ws` would only destroy it.
    if (socket.destroyed) return resume(Effect.succeed(undefined))
    // A refused handshake (`ws`'s own checks) never calls back: the socket closes instead.
    const onClose = () => resume(Effect.succeed(undefined))
    socket.once("close", onClose)
    wss.handleUpgrade(req, socket, head, (ws) => {
      socket.off("close", onClose)
      resume(Effect.succeed(ws))
    })
  })

/** Made once per relay. */
export const makeAdmission = <R>(wss: WebSocketServer, session: StartSession<R>) =>
  Effect.gen(function*() {
    const config = yield* RelayConfig
    const lifecycle = yield* Lifecycle
    const availability = yield* Availability
    const limiter = yield* RateLimiter
    const caps = yield* ConnectionCaps
    /**
     * Refusals before a connection exists are limited relay-wide per reason (SPEC §11): per
     * source IP would let a client with many addresses write a line per attempt, and would need
     * state per address. The first refusal of each second is logged with its `remote`.
     */
    const admissionWarnings = makePeerWarnings()

    /**
     * A generator function made once per relay, not per connection (each `Effect.gen` call would
     * give every suspended connection its own prototype). It *returns* what runs next
     * (flattened), so no generator frame holding the request head stays suspended for the
     * connection's life: a session keeps only the few header values it needs and the socket.
     */
    const admit: Admit<R> = Effect.fnUntraced(
      function*(hold: ConnectionHold, req: Http.IncomingMessage, socket: Stream.Duplex, head: Buffer) {
        // Whatever this request gets, 101 or a refusal, follows the responses owed before it.
        if (!(yield* afterEarlierResponses(socket))) return Effect.void
        const endpoint = endpointOf(pathOf(req.url))
        if (endpoint === undefined) return rejected(socket, 404)
        if (lifecycle.isDraining()) {
          yield* Metric.update(Metrics.connectionsRejected.draining, 1)
          return rejected(socket, 503)
        }
        // Cluster mode (CLUSTER.md §8): a claim or registration needs Redis; while it does not
        // answer, refuse before anything is taken. Always reachable for a single process.
        if (!availability.registryReachable()) {
          yield* availability.countUnreachable
          return rejected(socket, 503)
        }
        const ip = clientIp(req.socket.remoteAddress, req.headers["x-forwarded-for"], config.trustXForwardedFor)
        if (!(yield* limiter.take(ip))) {
          yield* Metric.update(Metrics.upgradeAttempts[endpoint].reject_rate_limit, 1)
          yield* Metric.update(Metrics.registerFailures.ratelimit, 1)
          yield* limited(admissionWarnings, "rate limited", (suppressed) =>
            Log.warn("rate limited", { ...(ip === undefined ? {} : { remote: ip }), suppressed }))
          return rejected(socket, 429)
        }
        const admission = caps.tryAcquire(ip)
        if (admission._tag === "Rejected") {
          yield* Metric.update(Metrics.connectionsRejected[admission.reason], 1)
          yield* limited(admissionWarnings, admission.reason, (suppressed) =>
            Log.warn("connection cap reached", {
              reason: admission.reason,
              ...(ip === undefined ? {} : { remote: ip }),
              suppressed
            }))
          return rejected(socket, 503)
        }
        hold.admit(admission) // in the same synchronous step as the acquisition
        const headers = req.headersDistinct
        if (!hasRequiredHeaders(endpoint, headers)) {
          yield* Metric.update(Metrics.upgradeAttempts[endpoint].reject_headers, 1)
          return rejected(socket, 400)
        }
        // Not an upgrade outcome (docs/metrics.md), like `ws`'s own refusals before it.
        const refusal = handshakeRefusal(req)
        if (refusal !== undefined) return rejected(socket, refusal)
        const start = sessionStart(endpoint, headers)
        const ws = yield* upgrade(wss, req, socket, head)
        if (ws === undefined) return Effect.void
        hold.track(ws)
        return session(start, ws)
      }
    )
    return admit
  })
