/**
 * The relay's own public listener (SPEC §1), for the standalone service and `Relay.layer`:
 * `/v1/server` and `/v1/client` upgrades (`RelayEndpoints`), `/healthz`, `/readyz`, 426 for an
 * endpoint asked for without an upgrade, and everything else to `AppRoutes` (404 by default).
 * The relay owns this Node server: ordinary requests go through `NodeHttpServer.makeHandler`, the
 * `upgrade` event straight to the endpoints, after their gate.
 *
 * Closing the layer's scope drains (SPEC §10): stop accepting, close every connection 1001, wait
 * up to the drain timeout, then destroy what is left; then the server closes.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import type { AddressInfo } from "node:net"
import { type ListenAddress, RelayConfig } from "../config/RelayConfig.ts"
import { Certificates } from "../edge/Certificates.ts"
import { guardRequests, guardUpgrades } from "../edge/HostCheck.ts"
import { AppRoutes } from "./AppRoutes.ts"
import { makeClientErrorListener } from "./ClientErrors.ts"
import { RelayEndpoints } from "./Endpoints.ts"
import { RelayHealth } from "./Health.ts"
import { bindPublic, ListenError } from "./Listener.ts"
import { endpointOf, pathOf } from "./UpgradeGate.ts"

export class PublicServer extends Context.Service<PublicServer, {
  /** The bound address (the real port when configured with port 0). */
  readonly address: ListenAddress
}>()("pyrycode-relay/PublicServer") {
  static readonly layer: Layer.Layer<PublicServer, ListenError, RelayConfig | RelayEndpoints | RelayHealth | Certificates> = Layer
    .effect(PublicServer, Effect.suspend(() => make))
}

const make = Effect.gen(function*() {
  const config = yield* RelayConfig
  const endpoints = yield* RelayEndpoints
  const health = yield* RelayHealth
  const appRoutes = yield* AppRoutes

  // In ACME mode certificates are chosen per handshake (SNI); with --proxy-protocol the PROXY
  // gate sits in front (EDGE.md).
  const certificates = yield* Certificates
  const server = yield* bindPublic(config, certificates.sniCallback)

  const app = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const path = pathOf(request.url)
    if (path === "/healthz") return yield* health.healthz
    if (path === "/readyz") return yield* health.readyz
    // A WebSocket path asked for without an upgrade.
    if (endpointOf(path) !== undefined) return HttpServerResponse.empty({ status: 426 })
    return yield* appRoutes
  })

  const requests = Scope.forkUnsafe(yield* Effect.scope, "parallel")
  const onRequest = yield* NodeHttpServer.makeHandler(app, { scope: requests })
  // EDGE.md §2: in ACME mode a request for another Host is answered 421 before anything runs.
  const domains = config.acme === undefined ? undefined : new Set(config.acme.domains)
  server.on("request", domains === undefined ? onRequest : guardRequests(domains, onRequest))
  server.on("upgrade", domains === undefined ? endpoints.onUpgrade : guardUpgrades(domains, endpoints.onUpgrade))
  // Malformed or late request heads. With this listener Node writes no response of its own.
  server.on("clientError", makeClientErrorListener(endpoints.run))

  yield* Effect.addFinalizer(() =>
    endpoints.drain(Effect.sync(() => {
      server.close()
      server.closeIdleConnections()
    }))
  )

  const bound = server.address() as AddressInfo
  return PublicServer.of({ address: { host: bound.address, port: bound.port } })
})
