// The standalone relay on its own port, and the app's admin API on a loopback port, reading the
// relay's routing state (`Registry`) from app code. Run: `PORT=8080 ADMIN_PORT=8081 node admin-counts.mjs`.
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import { createServer } from "node:http"
import { Registry, Relay, RelayConfig, RelayLogger } from "pyrycode-relay"

const relayPort = Number(process.env.PORT ?? 8080)
const adminPort = Number(process.env.ADMIN_PORT ?? 8081)

const Admin = Layer.mergeAll(
  // How many binaries and phones are connected right now.
  HttpRouter.add(
    "GET",
    "/admin/counts",
    Effect.gen(function*() {
      const registry = yield* Registry
      return HttpServerResponse.jsonUnsafe(yield* registry.counts)
    })
  ),
  // Whether the binary of one server-id is connected (not in grace).
  HttpRouter.add(
    "GET",
    "/admin/servers/:id",
    Effect.gen(function*() {
      const registry = yield* Registry
      const { id = "" } = yield* HttpRouter.params
      return HttpServerResponse.jsonUnsafe({ server_id: id, connected: registry.binaryFor(id) !== undefined })
    })
  )
)

const RelayLive = Relay.layer.pipe(
  Layer.provide(RelayConfig.layerFromValues({
    listen: { host: "127.0.0.1", port: relayPort },
    metricsListen: undefined
  }))
)

// Built after the relay it reads, so it closes first; then the relay drains.
const AdminLive = HttpRouter.serve(Admin, { disableLogger: true }).pipe(
  Layer.provide(NodeHttpServer.layer(createServer, { host: "127.0.0.1", port: adminPort }))
)

NodeRuntime.runMain(Layer.launch(AdminLive.pipe(
  Layer.provide(RelayLive),
  Layer.provide(RelayLogger.layer({ format: "json", level: "info" }))
)))
