/**
 * Routes of an embedding application, served on the relay's public listener for every path the
 * relay does not own (SPEC §12). The relay keeps `/v1/server`, `/v1/client`, `/healthz` and
 * `/readyz`; anything else goes here, and the default answers 404.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"

export type AppHandler = Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest>

export const AppRoutes = Context.Reference<AppHandler>("pyrycode-relay/AppRoutes", {
  defaultValue: () => Effect.succeed(HttpServerResponse.empty({ status: 404 }))
})
