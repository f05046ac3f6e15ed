// An Effect app that owns its HTTP server: its own API route, logger and metrics, with the relay
// mounted on the same server and port. Run: `PORT=8080 node app-with-relay.mjs`.
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import { createServer } from "node:http"
import { PrometheusExport, Relay, RelayConfig, RelayMetricRegistry } from "pyrycode-relay"

const port = Number(process.env.PORT ?? 8080)

// The app's server: the app's routes and the relay's two WebSocket endpoints share it. Its
// deadlines are the app's; these bound a slow request head as the relay's own listener does.
const server = createServer({ headersTimeout: 5_000, requestTimeout: 30_000, connectionsCheckingInterval: 1_000 })

// One metric registry for the app's metrics and the relay's, exported together.
const metrics = new Map()
const greetings = Metric.counter("example_greetings_total", {
  description: "Greetings the app served.",
  incremental: true
})

const Api = HttpRouter.add(
  "GET",
  "/api/hello",
  Effect.gen(function*() {
    yield* Metric.update(greetings, 1)
    yield* Effect.logInfo("greeted")
    return HttpServerResponse.text("hello from the app")
  })
)

// Scraped by your Prometheus; on a public port, put it behind your own access control.
const MetricsRoute = HttpRouter.add(
  "GET",
  "/metrics",
  Effect.gen(function*() {
    const { scrape } = yield* PrometheusExport
    return HttpServerResponse.text(yield* scrape, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
  })
)

// `/v1/server` and `/v1/client` on the app's server; `Relay.routes` adds `/healthz` and `/readyz`.
const RelayLive = Relay.layerOnServer(server).pipe(
  Layer.provide(RelayConfig.layerFromValues({ metricsListen: undefined, maxPhonesPerServer: 8 })),
  Layer.provide(Layer.succeed(RelayMetricRegistry, metrics))
)

const App = HttpRouter.serve(Layer.mergeAll(Api, MetricsRoute, Relay.routes), { disableLogger: true }).pipe(
  Layer.provide(RelayLive),
  Layer.provide(NodeHttpServer.layer(() => server, { host: "127.0.0.1", port })),
  // The app's logger: the relay's lines (`relay started`, `phone registered`, …) come here too.
  Layer.provide(Logger.layer([Logger.consoleJson])),
  Layer.provide(Layer.succeed(Metric.MetricRegistry, metrics))
)

NodeRuntime.runMain(Layer.launch(App))
