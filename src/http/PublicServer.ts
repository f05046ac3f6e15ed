/**
 * The public listener (SPEC §1): `/v1/server` and `/v1/client` upgrades, `/healthz`, `/readyz`,
 * 404 for anything else. The relay owns its Node server: ordinary requests go through
 * `NodeHttpServer.makeHandler`, and the `upgrade` event is handled here with `ws` in `noServer`
 * mode, after the gate has run — so a rejected request is answered with a plain HTTP status and
 * never touches the registry.
 *
 * Each upgraded connection runs as a fiber in `sessions`; closing the layer's scope drains them
 * (SPEC §10): stop accepting, close every registered connection 1001, wait up to the drain
 * timeout, then destroy what is left.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import type * as Http from "node:http"
import type { AddressInfo } from "node:net"
import type * as Stream from "node:stream"
import { WebSocketServer } from "ws"
import type WebSocket from "ws"
import { Ledger } from "../connection/BufferLedger.ts"
import { type ListenAddress, RelayConfig } from "../config/RelayConfig.ts"
import { version } from "../config/Version.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { makeWsConnection } from "../node/WsConnection.ts"
import { checkWsInternals, type WsInternalsChanged } from "../node/WsInternals.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { limited, makePeerWarnings } from "../observability/PeerWarnings.ts"
import { Registry } from "../registry/Registry.ts"
import { Lifecycle } from "../lifecycle/Lifecycle.ts"
import * as Session from "../session/Session.ts"
import { clientIp } from "../limits/ClientIp.ts"
import { ConnectionCaps } from "../limits/ConnectionCaps.ts"
import { RateLimiter } from "../limits/RateLimiter.ts"
import { ConnectionWatcher } from "../liveness/ConnectionWatcher.ts"
import type { Endpoint } from "../observability/Metrics.ts"
import { ConnectionHold, holding } from "./ConnectionHold.ts"
import { afterEarlierResponses } from "./EarlierResponses.ts"
import { type DistinctHeaders, endpointOf, handshakeRefusal, hasRequiredHeaders, headerValue, pathOf } from "./UpgradeGate.ts"
import { bindPublic, closeServer, ListenError } from "./Listener.ts"
import { AppRoutes } from "./AppRoutes.ts"
import { rejectUpgrade } from "./RejectUpgrade.ts"

export class PublicServer extends Context.Service<PublicServer, {
  /** The bound address (the real port when configured with port 0). */
  readonly address: ListenAddress
}>()("pyrycode-relay/PublicServer") {
  static readonly layer: Layer.Layer<
    PublicServer,
    ListenError | WsInternalsChanged,
    RelayConfig | Registry | Ledger | Lifecycle | ConnectionWatcher | RateLimiter | ConnectionCaps
  > = Layer
    .effect(PublicServer, Effect.suspend(() => make))
}

const JSON_CONTENT = "application/json; charset=utf-8"

/** The status for a request head Node could not take: too slow (slowloris), too big, or garbage. */
const clientErrorStatus = (code: string | undefined): number | undefined => {
  switch (code) {
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return 408
    case "HPE_HEADER_OVERFLOW":
      return 431
    case "ECONNRESET":
    case "EPIPE":
      return undefined
    default:
      return 400
  }
}

/** Socket errors end in `close`, which the session handles; one shared listener for all. */
const ignoreError = (): void => {}


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

const make = Effect.gen(function*() {
  // Fail at boot, naming the ws version, if the ws internals the write path and the message
  // deadline use are not what this code expects.
  yield* checkWsInternals
  const config = yield* RelayConfig
  const registry = yield* Registry
  const ledger = yield* Ledger
  const lifecycle = yield* Lifecycle
  const limiter = yield* RateLimiter
  const caps = yield* ConnectionCaps
  const appRoutes = yield* AppRoutes
  const startedAt = yield* Clock.currentTimeMillis
  /**
   * Refusals before a connection exists are limited relay-wide per reason (SPEC §11): per source
   * IP would let a client with many addresses write a line per attempt, and would need state per
   * address. The first refusal of each second is logged with its `remote`.
   */
  const admissionWarnings = makePeerWarnings()

  const server = yield* Effect.acquireRelease(bindPublic(config), closeServer)
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: config.maxFrameBytes,
    perMessageDeflate: false,
    // Never select a subprotocol, whatever the client offers (SPEC §1.2); `ws` would echo the
    // first one. With permessage-deflate off it selects no extension either.
    handleProtocols: () => false,
    clientTracking: false
  })
  /** Every upgraded socket, so the drain deadline can destroy the stragglers. */
  const sockets = new Set<WebSocket>()
  const sessions = yield* FiberSet.make<void>()
  const runSession = yield* FiberSet.runtime(sessions)<Session.SessionServices>()

  const app = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const path = pathOf(request.url)
    if (path === "/healthz") {
      const counts = yield* registry.counts
      const uptime = Math.floor(((yield* Clock.currentTimeMillis) - startedAt) / 1000)
      const body = JSON.stringify({
        status: "ok",
        version,
        connected_binaries: counts.binaries,
        connected_phones: counts.phones,
        uptime_seconds: uptime
      })
      return HttpServerResponse.text(body, { contentType: JSON_CONTENT, headers: { "cache-control": "no-store" } })
    }
    if (path === "/readyz") {
      const draining = lifecycle.isDraining()
      return HttpServerResponse.text(JSON.stringify({ status: draining ? "draining" : "ready" }), {
        status: draining ? 503 : 200,
        contentType: JSON_CONTENT,
        headers: { "cache-control": "no-store" }
      })
    }
    // A WebSocket path asked for without an upgrade.
    if (endpointOf(path) !== undefined) return HttpServerResponse.empty({ status: 426 })
    return yield* appRoutes
  })

  const upgrade = (req: Http.IncomingMessage, socket: Stream.Duplex, head: Buffer) =>
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

  /**
   * The gate (SPEC §1.2 order: rate limit, caps, required headers, handshake), then the upgrade;
   * returns the session to run. What it takes it records in `hold` (`holding` in `onUpgrade`
   * gives it back): the cap slot is held for the handler's whole life, rejects and probe
   * included (§7.2), and released however the handler ends — a refusal, a session's end, a
   * defect or interruption.
   *
   * A generator function made once per server, not per connection (each `Effect.gen` call would
   * give every suspended connection its own prototype). It *returns* what runs next (flattened),
   * so no generator frame holding the request head stays suspended for the connection's life: a
   * session keeps only the few header values it needs and the socket.
   */
  const handleUpgrade = Effect.fnUntraced(
    function*(hold: ConnectionHold, req: Http.IncomingMessage, socket: Stream.Duplex, head: Buffer) {
      // Whatever this request gets, 101 or a refusal, follows the responses owed before it.
      if (!(yield* afterEarlierResponses(socket))) return Effect.void
      const endpoint = endpointOf(pathOf(req.url))
      if (endpoint === undefined) return rejected(socket, 404)
      if (lifecycle.isDraining()) {
        yield* Metric.update(Metrics.connectionsRejected.draining, 1)
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
      const ws = yield* upgrade(req, socket, head)
      if (ws === undefined) return Effect.void
      hold.track(ws)
      return session(start, ws)
    }
  )

  /**
   * One connection's session, in its own scope (the socket's close timer, the claim or
   * registration). The session closes its socket however it ends (1011 `internal error` on a
   * defect) and waits until it is gone, so no socket outlives its session and the drain, which
   * sees only running sessions, never misses one.
   */
  const session = (start: Session.SessionStart, ws: WebSocket): Effect.Effect<void, never, Session.SessionServices> =>
    Session.run(start, makeWsConnection(ws, { closeTimeout: config.closeTimeout, ledger }))

  const requests = Scope.forkUnsafe(yield* Effect.scope, "parallel")
  const onRequest = yield* NodeHttpServer.makeHandler(app, { scope: requests })
  const onUpgrade = (req: Http.IncomingMessage, socket: Stream.Duplex, head: Buffer) => {
    socket.on("error", ignoreError)
    const hold = new ConnectionHold(sockets)
    runSession(holding(hold, handleUpgrade(hold, req, socket, head)))
  }
  server.on("request", onRequest)
  server.on("upgrade", onUpgrade)
  // Malformed or late request heads. With this listener Node writes no response of its own.
  // Node reports a parse error again for every further read of a connection, so only the first
  // report of a connection is answered.
  const answered = new WeakSet<Stream.Duplex>()
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Stream.Duplex) => {
    if (answered.has(socket)) return
    answered.add(socket)
    const status = clientErrorStatus(error.code)
    if (status === 408) runSession(Metric.update(Metrics.connectionsRejected.handshake_timeout, 1))
    if (status === undefined) return socket.destroy()
    // Like an upgrade's answer, this one follows the responses owed to requests pipelined before.
    runSession(Effect.map(afterEarlierResponses(socket), (alive) => {
      if (alive && socket.writable) rejectUpgrade(socket, status)
      else socket.destroy()
    }))
  })

  const drain = Effect.gen(function*() {
    if (!(yield* lifecycle.startDraining)) return
    yield* Log.info("shutdown started")
    server.close()
    server.closeIdleConnections()
    yield* registry.closeAll(CloseCodes.ShuttingDown)
    const finished = yield* Effect.timeoutOption(FiberSet.awaitEmpty(sessions), config.drainTimeout)
    if (Option.isNone(finished)) {
      yield* Log.warn("drain incomplete", { duration: Duration.format(config.drainTimeout) })
      for (const ws of sockets) ws.terminate()
    }
    yield* Log.info("shutdown complete")
  })
  yield* Effect.addFinalizer(() => drain)

  const bound = server.address() as AddressInfo
  return PublicServer.of({ address: { host: bound.address, port: bound.port } })
})
