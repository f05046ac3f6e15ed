/**
 * Binding the public listener: plain HTTP, or HTTPS (TLS ≥ 1.2) with `--tls-cert`/`--tls-key`.
 * Node's own deadlines enforce the handshake timeout (slowloris): `headersTimeout` bounds the
 * request head, and `connectionsCheckingInterval` makes the check run often enough to matter.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { readFileSync } from "node:fs"
import * as Http from "node:http"
import * as Https from "node:https"
import type { ListenAddress, RelayConfigShape } from "../config/RelayConfig.ts"

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

export const bindPublic = (config: RelayConfigShape): Effect.Effect<Http.Server, ListenError> =>
  Effect.flatMap(createServer(config), (server) => {
    const { host, port } = config.listen
    return Effect.as(
      Effect.mapError(
        listenOn(server, config.listen),
        (error) => new ListenError({ message: `cannot listen on ${host}:${port}: ${error.message}` })
      ),
      server
    )
  })

/**
 * Binds `server` to `address` (exclusively: never shared with a cluster worker). Interrupted
 * while binding, it releases whatever was bound. Both of the relay's own listeners bind here.
 */
export const listenOn = (server: Http.Server, address: ListenAddress): Effect.Effect<void, Error> =>
  Effect.callback<void, Error>((resume) => {
    const onError = (error: Error) => resume(Effect.fail(error))
    server.once("error", onError)
    server.listen({ host: address.host, port: address.port, exclusive: true }, () => {
      server.off("error", onError)
      resume(Effect.void)
    })
    return Effect.sync(() => {
      server.off("error", onError)
      server.close()
    })
  })

/**
 * Stops `server` and waits until it has closed. Open connections are dropped: by the time a
 * listener closes, whatever it carried has been drained or is not worth waiting for (keep-alive
 * scrapers, idle HTTP clients).
 */
export const closeServer = (server: Http.Server): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    if (!server.listening) return resume(Effect.void)
    server.close(() => resume(Effect.void))
    server.closeAllConnections()
  })
