/**
 * Binding the public listener: plain HTTP, HTTPS (TLS ≥ 1.2) with `--tls-cert`/`--tls-key`, or in
 * ACME mode HTTPS whose certificate is chosen per handshake by `Certificates` (SNI).
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
import type * as Net from "node:net"
import type * as Tls from "node:tls"
import type { ListenAddress, RelayConfigShape } from "../config/RelayConfig.ts"
import { installProxyGate } from "../edge/ProxyListener.ts"

/** The listener could not be set up or bound (SPEC §9: the relay exits 1). */
export class ListenError extends Schema.TaggedError<ListenError>()("ListenError", {
  message: Schema.String
}) {}

/** Node's request-head deadlines from `--handshake-timeout` (also used by the challenge listener). */
export const serverOptions = (config: RelayConfigShape): Http.ServerOptions => {
  const handshake = Math.max(1, Duration.toMillis(config.handshakeTimeout))
  return {
    headersTimeout: handshake,
    requestTimeout: handshake,
    connectionsCheckingInterval: Math.max(50, Math.min(500, Math.floor(handshake / 4))),
    keepAliveTimeout: 5_000
  }
}

/** Picks the certificate for a handshake from its SNI name (ACME mode). */
export type SniCallback = NonNullable<Tls.TlsOptions["SNICallback"]>

const createServer = (config: RelayConfigShape, sni: SniCallback | undefined): Effect.Effect<Http.Server, ListenError> =>
  Effect.try({
    try: () => {
      if (sni !== undefined) {
        // No default certificate: a handshake without SNI, or naming another host, fails.
        return Https.createServer({ ...serverOptions(config), SNICallback: sni, minVersion: "TLSv1.2" })
      }
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

/**
 * Binds `server` to `address` (exclusively: never shared with a cluster worker); host `""` means
 * every interface. Interrupted while binding, it releases whatever was bound. Every listener of
 * the relay binds here (public, metrics, ACME challenge).
 */
export const listenOn = <S extends Net.Server>(server: S, address: ListenAddress): Effect.Effect<S, ListenError> =>
  Effect.callback<S, ListenError>((resume) => {
    const { host, port } = address
    const onError = (error: Error) =>
      resume(Effect.fail(new ListenError({ message: `cannot listen on ${host}:${port}: ${error.message}` })))
    server.once("error", onError)
    server.listen({ ...(host === "" ? {} : { host }), port, exclusive: true }, () => {
      server.off("error", onError)
      resume(Effect.succeed(server))
    })
    return Effect.sync(() => {
      server.off("error", onError)
      server.close()
    })
  })

/**
 * The bound public server, a resource of the caller's scope; `sni` chooses certificates in ACME
 * mode. With `--proxy-protocol` the PROXY
 * gate is put in front before the first connection can arrive; connections still waiting for
 * their header are destroyed when the scope closes.
 */
export const bindPublic = (
  config: RelayConfigShape,
  sni?: SniCallback
): Effect.Effect<Http.Server, ListenError, Scope.Scope> =>
  Effect.gen(function*() {
    const server = yield* createServer(config, sni)
    if (config.proxyProtocol) yield* installProxyGate(server, config.handshakeTimeout)
    return yield* Effect.acquireRelease(listenOn(server, config.listen), closeServer)
  })

/**
 * Stops `server` and waits until it has closed. Open connections are dropped: by the time a
 * listener closes, whatever it carried has been drained or is not worth waiting for (keep-alive
 * scrapers, idle HTTP clients).
 */
export const closeServer = (server: Net.Server & { closeAllConnections?: () => void }): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    if (!server.listening) return resume(Effect.void)
    server.close(() => resume(Effect.void))
    server.closeAllConnections?.()
  })
