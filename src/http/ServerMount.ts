/**
 * The relay's WebSocket endpoints on a Node server the application owns (`Relay.layerOnServer`),
 * next to the application's own routes on the same port. The relay takes exactly two request
 * targets, `/v1/server` and `/v1/client`: their upgrades go through its gate, and an ordinary
 * request for them gets 426 as on the relay's own listener. Every other request and upgrade
 * reaches the application's listeners as if the relay were not there.
 *
 * Why the server's `emit` is wrapped, not just listened to: Node calls every `upgrade` listener
 * with the same socket, and an Effect app served with `HttpRouter.serve` on `NodeHttpServer`
 * has one — it would answer a relay upgrade too (its router's 404, on a socket the relay just
 * upgraded). The wrapper hands the relay's upgrades to the relay alone; no listener of the
 * application ever sees them, whichever was added first.
 *
 * Why `close` is wrapped: the server cannot finish closing while relay connections are open
 * (Node waits for every connection), and `NodeHttpServer` waits for it before it tears its app
 * down (20 s by default). So the server's `close` starts the relay's drain (SPEC §10: 503 to
 * new upgrades, 1001 to every peer, drain timeout), whichever of the two shuts down first.
 *
 * The server's own settings stay the application's: listen address, TLS, `headersTimeout` and
 * `requestTimeout` (the relay's handshake timeout on its own listener), answers to malformed
 * request heads. Unmounting (the layer's scope closing) drains, then restores the server.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type * as Http from "node:http"
import type * as Stream from "node:stream"
import { RelayEndpoints } from "./Endpoints.ts"
import { rejectUpgrade } from "./RejectUpgrade.ts"

/** The server already carries a relay: two would both claim `/v1/server` and `/v1/client`. */
export class ServerMountError extends Schema.TaggedError<ServerMountError>()("ServerMountError", {
  message: Schema.String
}) {}

export class ServerMount extends Context.Service<ServerMount, {
  /** The application's server the relay's endpoints are mounted on. */
  readonly server: Http.Server
}>()("pyrycode-relay/ServerMount") {
  static readonly layer = (server: Http.Server): Layer.Layer<ServerMount, ServerMountError, RelayEndpoints> =>
    Layer.effect(ServerMount, Effect.suspend(() => mount(server)))
}

/** Servers that carry a relay now. */
const mounted = new WeakSet<Http.Server>()

type Emit = Http.Server["emit"]
type Close = Http.Server["close"]

const mount = (server: Http.Server) =>
  Effect.gen(function*() {
    if (mounted.has(server)) {
      return yield* new ServerMountError({ message: "a relay is already mounted on this server" })
    }
    const endpoints = yield* RelayEndpoints
    // Started by the server's `close` or by unmounting, whichever comes first; the other waits.
    const drain = yield* Effect.cached(endpoints.drain(Effect.void))
    const background = yield* FiberSet.make<void>()
    const runBackground = yield* FiberSet.runtime(background)()

    let active = true
    const ownEmit = Object.hasOwn(server, "emit")
    const ownClose = Object.hasOwn(server, "close")
    const emit = server.emit
    const close = server.close

    const relayEmit = function(this: Http.Server, event: string | symbol, ...args: Array<unknown>): boolean {
      if (active && (event === "upgrade" || event === "request")) {
        const req = args[0] as Http.IncomingMessage
        if (endpoints.owns(req.url)) {
          if (event === "upgrade") endpoints.onUpgrade(req, args[1] as Stream.Duplex, args[2] as Buffer)
          else upgradeRequired(args[1] as Http.ServerResponse)
          return true
        }
      }
      return Reflect.apply(emit, this, [event, ...args])
    } as Emit
    const relayClose = function(this: Http.Server, ...args: Array<unknown>) {
      if (active) runBackground(drain)
      return Reflect.apply(close, this, args)
    } as Close

    /**
     * Node delivers an upgrade request as an ordinary request when the server has no `upgrade`
     * listener, so the relay keeps one. It only ever sees other paths' upgrades (the relay's own
     * never reach a listener); when no listener of the application is there to take them, it
     * refuses them as the relay's own listener does.
     */
    const onOtherUpgrade = (_req: Http.IncomingMessage, socket: Stream.Duplex): void => {
      if (server.listenerCount("upgrade") > 1) return
      socket.on("error", ignoreError)
      rejectUpgrade(socket, 404)
    }

    mounted.add(server)
    server.emit = relayEmit
    server.close = relayClose
    server.on("upgrade", onOtherUpgrade)

    yield* Effect.addFinalizer(() =>
      Effect.andThen(
        drain,
        Effect.sync(() => {
          active = false
          server.off("upgrade", onOtherUpgrade)
          // Put back only what is still ours; a wrapper added on top of ours keeps working, and
          // ours, inactive, passes everything through.
          if (server.emit === relayEmit) restore(server, "emit", ownEmit ? emit : undefined)
          if (server.close === relayClose) restore(server, "close", ownClose ? close : undefined)
          mounted.delete(server)
        })
      )
    )
    return ServerMount.of({ server })
  })

/** A WebSocket endpoint asked for without an upgrade (as on the relay's own listener). */
const upgradeRequired = (response: Http.ServerResponse): void => {
  response.statusCode = 426
  response.end()
}

const ignoreError = (): void => {}

/** Restores an own property, or removes ours so the prototype's shows through again. */
const restore = <K extends "emit" | "close">(server: Http.Server, key: K, own: Http.Server[K] | undefined): void => {
  if (own === undefined) delete (server as Partial<Http.Server>)[key]
  else server[key] = own
}
