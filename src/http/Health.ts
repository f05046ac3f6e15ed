/**
 * `/healthz` and `/readyz` (SPEC §1.5, §1.6). The standalone listener serves them itself; an
 * application that mounts the relay on its own server adds them to its `HttpRouter` with
 * `routes` (or serves `RelayHealth`'s answers at paths of its choosing).
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import { version } from "../config/Version.ts"
import { Registry } from "../registry/Registry.ts"
import { Availability } from "../lifecycle/Availability.ts"
import { Lifecycle } from "../lifecycle/Lifecycle.ts"

const JSON_CONTENT = "application/json; charset=utf-8"
const NO_STORE = { "cache-control": "no-store" }

export class RelayHealth extends Context.Service<RelayHealth, {
  /** `/healthz`: status, version, connected binaries and phones, uptime (seconds since the relay started). */
  readonly healthz: Effect.Effect<HttpServerResponse.HttpServerResponse>
  /**
   * `/readyz`: 200 `ready`, or 503 `draining` once shutdown started, or (cluster mode) 503
   * `registry unreachable` while Redis does not answer.
   */
  readonly readyz: Effect.Effect<HttpServerResponse.HttpServerResponse>
}>()("pyrycode-relay/RelayHealth") {
  static readonly layer: Layer.Layer<RelayHealth, never, Registry | Lifecycle> = Layer.effect(
    RelayHealth,
    Effect.gen(function*() {
      const registry = yield* Registry
      const lifecycle = yield* Lifecycle
      const availability = yield* Availability
      const startedAt = yield* Clock.currentTimeMillis
      const healthz = Effect.gen(function*() {
        const counts = yield* registry.counts
        const uptime = Math.floor(((yield* Clock.currentTimeMillis) - startedAt) / 1000)
        const body = JSON.stringify({
          status: "ok",
          version,
          connected_binaries: counts.binaries,
          connected_phones: counts.phones,
          uptime_seconds: uptime,
          // CLUSTER.md §1: only in cluster mode, after SPEC §1.5's keys (their order is kept).
          ...(availability.nodeId === undefined ? {} : { node_id: availability.nodeId })
        })
        return HttpServerResponse.text(body, { contentType: JSON_CONTENT, headers: NO_STORE })
      })
      const readyz = Effect.sync(() => {
        const status = lifecycle.isDraining()
          ? "draining"
          : availability.registryReachable()
          ? "ready"
          : "registry unreachable"
        return HttpServerResponse.text(JSON.stringify({ status }), {
          status: status === "ready" ? 200 : 503,
          contentType: JSON_CONTENT,
          headers: NO_STORE
        })
      })
      return RelayHealth.of({ healthz, readyz })
    })
  )
}

/** `GET /healthz` and `GET /readyz` on the application's `HttpRouter`, answered by the relay. */
export const routes = HttpRouter.addAll([
  HttpRouter.route("GET", "/healthz", RelayHealth.use((health) => health.healthz)),
  HttpRouter.route("GET", "/readyz", RelayHealth.use((health) => health.readyz))
])
