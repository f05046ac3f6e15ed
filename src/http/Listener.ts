/**
 * Binding the public listener: plain HTTP, or HTTPS (TLS ≥ 1.2) with `--tls-cert`/`--tls-key`.
 * Node's own deadlines enforce the handshake timeout (slowloris): `headersTimeout` bounds the
 * request head, and `connectionsCheckingInterval` makes the check run often enough to matter.
 * With `--proxy-protocol` the same timeout bounds the PROXY header (EDGE.md §3: 5 s by default).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { readFileSync } from "node:fs"
import * as Http from "node:http"
import * as Https from "node:https"
import type { RelayConfigShape } from "../config/RelayConfig.ts"
import { installProxyGate } from "../edge/ProxyListener.ts"

/** The listener could not be set up or bound (SPEC §9: the relay exits 1). */
export class ListenError extends Schema.TaggedError<ListenError>()("ListenError", {
  message: Schema.String
}) {}

const serverOptions = (config: RelayConfigShape): Http.ServerOptions => {
  const handshake = Math.max(1, Duration.toMillis(config.handshakeTimeout))
  return {
    headersTimeout: handshake,
    requestTimeout: handshake,
    connectionsCheckingInterval: Math.max(50, Math.min(500, Math.floor(handshake / 4))),
    keepAliveTimeout: 5_000
  }
}

const createServer = (config: RelayConfigShape): Effect.Effect<Http.Server, ListenError> =>
  Effect.try({
    try: () => {
      if (config.tls === undefined) return Http.createServer(serverOptions(config))
      return Https.createServer({
        ...serverOptions(config),
        cert: readFileSync(config.tls.certFile),
        key: readFileSync(config.tls.keyFile),
        minVersion: "TLSv1.2"
      })
    },
    catch: (error) => new ListenError({ message: `cannot load TLS files: ${(error as Error).message}` })
  })

const listen = (server: Http.Server, config: RelayConfigShape): Effect.Effect<Http.Server, ListenError> =>
  Effect.callback<Http.Server, ListenError>((resume) => {
    const { host, port } = config.listen
    const onError = (error: Error) =>
      resume(Effect.fail(new ListenError({ message: `cannot listen on ${host}:${port}: ${error.message}` })))
    server.once("error", onError)
    server.listen({ host, port, exclusive: true }, () => {
      server.off("error", onError)
      resume(Effect.succeed(server))
    })
    return Effect.sync(() => {
      server.off("error", onError)
      server.close()
    })
  })

/**
 * The bound public server, a resource of the caller's scope. With `--proxy-protocol` the PROXY
 * gate is put in front before the first connection can arrive; connections still waiting for
 * their header are destroyed when the scope closes.
 */
export const bindPublic = (config: RelayConfigShape): Effect.Effect<Http.Server, ListenError, Scope.Scope> =>
  Effect.gen(function*() {
    const server = yield* createServer(config)
    if (config.proxyProtocol) yield* installProxyGate(server, config.handshakeTimeout)
    return yield* Effect.acquireRelease(listen(server, config), closeServer)
  })

export const closeServer = (server: Http.Server): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    if (!server.listening) return resume(Effect.void)
    server.close(() => resume(Effect.void))
    server.closeAllConnections()
  })
