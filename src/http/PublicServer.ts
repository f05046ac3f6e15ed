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
import { AppRoutes } from "./AppRoutes.ts"
import { makeClientErrorListener } from "./ClientErrors.ts"
import { RelayEndpoints } from "./Endpoints.ts"
import { RelayHealth } from "./Health.ts"
import { bindPublic, closeServer, ListenError } from "./Listener.ts"
import { endpointOf, pathOf } from "./UpgradeGate.ts"

export class PublicServer extends Context.Service<PublicServer, {
  /** The bound address (the real port when configured with port 0). */
  readonly address: ListenAddress
}>()("pyrycode-relay/PublicServer") {
  static readonly layer: Layer.Layer<PublicServer, ListenError, RelayConfig | RelayEndpoints | RelayHealth> = Layer
    .effect(PublicServer, Effect.suspend(() => make))
}

const make = Effect.gen(function*() {
  const config = yield* RelayConfig
  const endpoints = yield* RelayEndpoints
  const health = yield* RelayHealth
  const appRoutes = yield* AppRoutes

  const server = yield* Effect.acquireRelease(bindPublic(config), closeServer)

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
  server.on("request", onRequest)
  server.on("upgrade", endpoints.onUpgrade)
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
