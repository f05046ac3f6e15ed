/**
 * The metrics listener (SPEC §1.1, §8.1): its own Node `http.Server` on a loopback address,
 * serving `GET /metrics` and 404 for everything else. No authentication — the loopback bind is
 * the protection, so the CLI refuses any address that `isLoopbackLiteral` rejects, and this
 * listener is never the public one.
 *
 * The server is a scoped resource: closing the layer's scope stops accepting, drops open
 * keep-alive connections and waits until the server has closed.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { type ListenAddress, RelayConfig } from "../config/RelayConfig.ts"
import { PrometheusExport } from "../observability/PrometheusExport.ts"
import { closeServer, listenOn } from "./Listener.ts"
import { pathOf } from "./RequestPath.ts"

/** The Prometheus text exposition format, version 0.0.4 (SPEC §8.1). */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

/** The one check the CLI applies to `--metrics-listen` (re-exported here, where it matters). */
export { isLoopbackLiteral } from "../config/Units.ts"

/** The metrics listener could not bind its address (SPEC §9: the relay exits 1). */
export class MetricsListenError extends Schema.TaggedError<MetricsListenError>()("MetricsListenError", {
  host: Schema.String,
  port: Schema.Number,
  message: Schema.String
}) {}

export class MetricsServer extends Context.Service<MetricsServer, {
  /** The bound address (the real port when configured with port 0), or `undefined` when disabled. */
  readonly address: ListenAddress | undefined
}>()("pyrycode-relay/MetricsServer") {
  /** Binds `RelayConfig.metricsListen` when it is defined; otherwise does nothing. */
  static readonly layer: Layer.Layer<MetricsServer, MetricsListenError, RelayConfig | PrometheusExport> = Layer
    .effect(
      MetricsServer,
      Effect.gen(function*() {
        const { metricsListen } = yield* RelayConfig
        if (metricsListen === undefined) return MetricsServer.of({ address: undefined })
        const { scrape } = yield* PrometheusExport

        const app = Effect.gen(function*() {
          const request = yield* HttpServerRequest.HttpServerRequest
          if (request.method !== "GET" || pathOf(request.url) !== "/metrics") {
            return HttpServerResponse.empty({ status: 404 })
          }
          const text = yield* scrape
          return HttpServerResponse.text(text, { contentType: METRICS_CONTENT_TYPE })
        })

        const server = yield* Effect.acquireRelease(listen(metricsListen), closeServer)
        // Request fibers live in a child scope that closes (interrupting them) before the server.
        const requests = Scope.forkUnsafe(yield* Effect.scope, "parallel")
        const handler = yield* NodeHttpServer.makeHandler(app, { scope: requests })
        server.on("request", handler)
        yield* Effect.addFinalizer(() => Effect.sync(() => server.off("request", handler)))

        const bound = server.address() as AddressInfo
        return MetricsServer.of({ address: { host: bound.address, port: bound.port } })
      })
    )
}

/** A new plain-HTTP server bound to `address` (the CLI allows loopback addresses only). */
const listen = (address: ListenAddress): Effect.Effect<Http.Server, MetricsListenError> => {
  const server = Http.createServer()
  return Effect.as(
    Effect.mapError(
      listenOn(server, address),
      (error) => new MetricsListenError({ host: address.host, port: address.port, message: error.message })
    ),
    server
  )
}
