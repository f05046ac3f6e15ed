// An Effect app that serves its own route next to the relay, on the relay's listener.
import * as Effect from "effect/Effect"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import { AppRoutes, Relay, RelayConfig } from "pyrycode-relay"

// Every path the relay does not own (/v1/server, /v1/client, /healthz, /readyz) comes here.
const appRoutes = Layer.succeed(
  AppRoutes,
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    if (request.url === "/hello") return HttpServerResponse.text("hello from the app")
    return HttpServerResponse.empty({ status: 404 })
  })
)

export const makeApp = (port: number) =>
  Relay.layer.pipe(
    Layer.provide(appRoutes),
    Layer.provide(RelayConfig.layerFromValues({
      listen: { host: "127.0.0.1", port },
      metricsListen: undefined
    }))
  )

// In a real program: `Layer.launch(makeApp(8080)).pipe(NodeRuntime.runMain)`.
