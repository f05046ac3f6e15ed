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
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { Registry } from "../registry/Registry.ts"
import { type BinaryInfo, runBinary } from "../session/BinarySession.ts"
import { Lifecycle } from "../session/Lifecycle.ts"
import { type PhoneInfo, runPhone } from "../session/PhoneSession.ts"
import { clientIp } from "../limits/ClientIp.ts"
import { ConnectionCaps } from "../limits/ConnectionCaps.ts"
import { RateLimiter } from "../limits/RateLimiter.ts"
import { ConnectionWatcher } from "../liveness/ConnectionWatcher.ts"
import type { Endpoint } from "../observability/Metrics.ts"
import { endpointOf, hasRequiredHeaders, headerValue, pathOf } from "./UpgradeGate.ts"
import { bindPublic, ListenError } from "./Listener.ts"
import { AppRoutes } from "./AppRoutes.ts"
import { Certificates } from "../edge/Certificates.ts"
import { guardRequests, guardUpgrades } from "../edge/HostCheck.ts"
import { rejectUpgrade } from "./RejectUpgrade.ts"

export class PublicServer extends Context.Service<PublicServer, {
  /** The bound address (the real port when configured with port 0). */
  readonly address: ListenAddress
}>()("pyrycode-relay/PublicServer") {
  static readonly layer: Layer.Layer<
    PublicServer,
    ListenError,
    RelayConfig | Registry | Ledger | Lifecycle | ConnectionWatcher | RateLimiter | ConnectionCaps | Certificates
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

/** An admission that holds a slot. */
type Held = { readonly release: () => void }

/** What a connection's session needs from the relay's context. */
type SessionServices = RelayConfig | Registry | Ledger | Lifecycle | ConnectionWatcher

/** A rejected upgrade: answered at once, nothing left to run. */
const rejected = (socket: Stream.Duplex, status: number): Effect.Effect<void> => {
  rejectUpgrade(socket, status)
  return Effect.void
}

/** The header values a session keeps (the gate has checked the required ones are there). */
type SessionStart =
  | { readonly endpoint: "server"; readonly info: BinaryInfo }
  | { readonly endpoint: "client"; readonly info: PhoneInfo }

const sessionStart = (endpoint: Endpoint, headers: Http.IncomingHttpHeaders): SessionStart => {
  const serverId = headerValue(headers, "x-pyrycode-server")!
  return endpoint === "server"
    ? { endpoint, info: { serverId, version: headerValue(headers, "x-pyrycode-version")! } }
    : { endpoint, info: { serverId, deviceName: headerValue(headers, "x-pyrycode-device-name") } }
}

const make = Effect.gen(function*() {
  const config = yield* RelayConfig
  const registry = yield* Registry
  const ledger = yield* Ledger
  const lifecycle = yield* Lifecycle
  const limiter = yield* RateLimiter
  const caps = yield* ConnectionCaps
  const appRoutes = yield* AppRoutes
  const startedAt = yield* Clock.currentTimeMillis

  const certificates = yield* Certificates
  const server = yield* bindPublic(config, certificates.sniCallback)
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: config.maxFrameBytes,
    perMessageDeflate: false,
    clientTracking: false
  })
  /** Every upgraded socket, so the drain deadline can destroy the stragglers. */
  const sockets = new Set<WebSocket>()
  const sessions = yield* FiberSet.make<void>()
  const runSession = yield* FiberSet.runtime(sessions)<SessionServices>()

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
      // A refused handshake (bad key, version, method) never calls back: the socket closes instead.
      const onClose = () => resume(Effect.succeed(undefined))
      socket.once("close", onClose)
      wss.handleUpgrade(req, socket, head, (ws) => {
        socket.off("close", onClose)
        resume(Effect.succeed(ws))
      })
    })

  // Generator functions made once per server, not per connection (each `Effect.gen` call would
  // give every suspended connection its own prototype). The gate and the upgrade each *return*
  // what runs next (flattened), so no generator frame holding the request head stays suspended
  // for the connection's life: a session keeps only the few header values it needs.
  const handleUpgrade = Effect.fnUntraced(
    function*(req: Http.IncomingMessage, socket: Stream.Duplex, head: Buffer) {
      const endpoint = endpointOf(pathOf(req.url))
      if (endpoint === undefined) return rejected(socket, 404)
      if (lifecycle.isDraining()) {
        yield* Metric.update(Metrics.connectionsRejected.draining, 1)
        return rejected(socket, 503)
      }
      // SPEC §1.2 order: rate limit, then the caps, then the headers.
      const ip = clientIp(req.socket.remoteAddress, req.headers["x-forwarded-for"], config.trustXForwardedFor)
      if (!(yield* limiter.take(ip))) {
        yield* Metric.update(Metrics.upgradeAttempts[endpoint].reject_rate_limit, 1)
        yield* Metric.update(Metrics.registerFailures.ratelimit, 1)
        yield* Log.warn("rate limited", ip === undefined ? {} : { remote: ip })
        return rejected(socket, 429)
      }
      const admission = caps.tryAcquire(ip)
      if (admission._tag === "Rejected") {
        yield* Metric.update(Metrics.connectionsRejected[admission.reason], 1)
        yield* Log.warn("connection cap reached", { reason: admission.reason, ...(ip === undefined ? {} : { remote: ip }) })
        return rejected(socket, 503)
      }
      // The cap slot is held for the handler's whole life, rejects and probe included (§7.2).
      return Effect.flatten(Effect.onInterrupt(
        admitted(endpoint, req, socket, head, admission),
        () => Effect.sync(() => admission.release())
      ))
    }
  )

  /**
   * Header check and upgrade; returns the session to run. The session effect it returns refers to
   * the few header values it needs and the socket, never to the request (a wrapper such as
   * `ensuring` holds the effect it wraps for the connection's whole life).
   */
  const admitted = Effect.fnUntraced(
    function*(endpoint: Endpoint, req: Http.IncomingMessage, socket: Stream.Duplex, head: Buffer, admission: Held) {
      if (!hasRequiredHeaders(endpoint, req.headers)) {
        yield* Metric.update(Metrics.upgradeAttempts[endpoint].reject_headers, 1)
        admission.release()
        return rejected(socket, 400)
      }
      const start = sessionStart(endpoint, req.headers)
      const ws = yield* upgrade(req, socket, head)
      if (ws === undefined) {
        admission.release()
        return Effect.void
      }
      sockets.add(ws)
      return Effect.ensuring(
        session(start, ws),
        Effect.sync(() => {
          sockets.delete(ws)
          admission.release()
        })
      )
    }
  )

  /** One connection's session, in its own scope (the socket's close timer, the claim or registration). */
  const session = (start: SessionStart, ws: WebSocket): Effect.Effect<void, never, SessionServices> =>
    Effect.scoped(Effect.flatMap(
      makeWsConnection(ws, { closeTimeout: config.closeTimeout, ledger }),
      (conn): Effect.Effect<void, never, SessionServices | Scope.Scope> =>
        start.endpoint === "server" ? runBinary(conn, start.info) : runPhone(conn, start.info)
    ))

  const requests = Scope.forkUnsafe(yield* Effect.scope, "parallel")
  const onRequest = yield* NodeHttpServer.makeHandler(app, { scope: requests })
  const onUpgrade = (req: Http.IncomingMessage, socket: Stream.Duplex, head: Buffer) => {
    socket.on("error", ignoreError)
    runSession(Effect.flatten(handleUpgrade(req, socket, head)))
  }
  // EDGE.md §2: in ACME mode a request for another Host is answered 421 before anything runs.
  const domains = config.acme === undefined ? undefined : new Set(config.acme.domains)
  server.on("request", domains === undefined ? onRequest : guardRequests(domains, onRequest))
  server.on("upgrade", domains === undefined ? onUpgrade : guardUpgrades(domains, onUpgrade))
  // Malformed or late request heads. With this listener Node writes no response of its own.
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Stream.Duplex) => {
    const status = clientErrorStatus(error.code)
    if (status === 408) runSession(Metric.update(Metrics.connectionsRejected.handshake_timeout, 1))
    if (socket.writable && status !== undefined) rejectUpgrade(socket, status)
    else socket.destroy()
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
