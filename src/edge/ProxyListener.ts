/**
 * PROXY protocol v2 in front of the public listener (EDGE.md §3). Every accepted TCP connection
 * first goes through `gate`: its header must be complete within the deadline and acceptable to
 * `parseProxyHeader`; only then does the connection reach the server's own `connection` handling
 * (TLS, then HTTP), with the header's source address as its remote address. Anything else is
 * destroyed with zero bytes written and counted `connections_rejected{reason="proxy_header"}` —
 * there is never a fallback to the socket's peer address, which is the balancer's.
 *
 * Each connection's header is read by its own fiber, so one slow or silent peer never holds up
 * accepting or admitting another.
 *
 * How the address reaches the rest of the relay: `remoteAddress` (and `remotePort`,
 * `remoteFamily`) are shadowed on the socket before the server sees it, so rate limit, per-IP cap
 * and logs read the client's address without knowing PROXY exists. Over TLS the HTTP layer sees a
 * `TLSSocket` made by the TLS server, not ours; it is matched back to its TCP connection by the
 * connection's real peer address and port (unique among live connections of one listener), in a
 * `secureConnection` listener placed before the HTTP server's own.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type * as Net from "node:net"
import * as Tls from "node:tls"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { parseProxyHeader, type ProxyRefusal } from "./ProxyHeader.ts"

/** Why a connection was refused: the parser's reasons, or what the peer failed to send in time. */
export type GateRefusal = ProxyRefusal | "none" | "truncated" | "late"

type HeaderOutcome =
  | { readonly _tag: "Accepted"; readonly source: string; readonly sourcePort: number }
  | { readonly _tag: "Refused"; readonly reason: GateRefusal }

interface ClientAddress {
  readonly address: string
  readonly port: number
}

/** Shadows the socket's peer address with the client's (see the module comment). */
const useClientAddress = (socket: Net.Socket, client: ClientAddress): void => {
  const family = client.address.includes(":") ? "IPv6" : "IPv4"
  Object.defineProperty(socket, "remoteAddress", { value: client.address, configurable: true, enumerable: true })
  Object.defineProperty(socket, "remotePort", { value: client.port, configurable: true, enumerable: true })
  Object.defineProperty(socket, "remoteFamily", { value: family, configurable: true, enumerable: true })
}

/** The TCP connection under a socket, by its real peer (read before any shadowing). */
const peerKey = (socket: Net.Socket): string => `${socket.remoteAddress}|${socket.remotePort}`

/** Socket errors in the gate end in `close`, which the reader sees. */
const ignoreError = (): void => {}

/**
 * Reads the header off the front of `socket`, consuming exactly its bytes: anything that arrived
 * with it is put back for TLS or HTTP. Never reads past a refusal.
 */
const readHeader = (socket: Net.Socket): Effect.Effect<HeaderOutcome> =>
  Effect.callback<HeaderOutcome>((resume) => {
    let received: Buffer = Buffer.alloc(0)
    const cleanup = () => {
      socket.off("readable", onReadable)
      socket.off("end", onEnd)
      socket.off("close", onEnd)
    }
    const onReadable = () => {
      for (;;) {
        const chunk = socket.read() as Buffer | null
        if (chunk === null) return
        received = received.length === 0 ? chunk : Buffer.concat([received, chunk])
        const parsed = parseProxyHeader(received)
        if (parsed._tag === "Incomplete") continue
        cleanup()
        if (parsed._tag === "Refused") return resume(Effect.succeed(parsed))
        if (received.length > parsed.headerLength) socket.unshift(received.subarray(parsed.headerLength))
        return resume(Effect.succeed({ _tag: "Accepted", source: parsed.source, sourcePort: parsed.sourcePort }))
      }
    }
    // The peer finished (or vanished) before a whole header arrived.
    const onEnd = () => {
      cleanup()
      resume(Effect.succeed({ _tag: "Refused", reason: received.length === 0 ? "none" : "truncated" }))
    }
    socket.on("readable", onReadable)
    socket.once("end", onEnd)
    socket.once("close", onEnd)
    return Effect.sync(cleanup)
  })

/**
 * Puts the gate in front of `server`'s own connection handling. Call before `listen`, so no
 * connection ever bypasses it. The gate's fibers live in the caller's scope: closing it destroys
 * every connection still waiting for its header.
 */
export const installProxyGate = (
  server: Net.Server,
  deadline: Duration.Duration
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const gates = yield* FiberSet.make<void>()
    const run = yield* FiberSet.runtime(gates)<never>()
    // The server's own handling (HTTP parsing, or the TLS handshake), run once a header passed.
    const handlers = server.listeners("connection") as Array<(socket: Net.Socket) => void>
    server.removeAllListeners("connection")

    const overTls = new Map<string, ClientAddress>()
    if (server instanceof Tls.Server) {
      server.prependListener("secureConnection", (socket: Tls.TLSSocket) => {
        const client = overTls.get(peerKey(socket))
        if (client !== undefined) useClientAddress(socket, client)
      })
    }

    const admit = (socket: Net.Socket, client: ClientAddress): void => {
      // Gone between its header and now: nothing to hand over (and no `close` left to clean up on).
      if (socket.destroyed) return
      if (server instanceof Tls.Server) {
        const key = peerKey(socket)
        overTls.set(key, client)
        socket.once("close", () => overTls.delete(key))
      }
      useClientAddress(socket, client)
      socket.off("error", ignoreError)
      for (const handler of handlers) handler.call(server, socket)
    }

    const refuse = (socket: Net.Socket, reason: GateRefusal): Effect.Effect<void> => {
      // The balancer's address: the client's is exactly what could not be read.
      const remote = socket.remoteAddress
      socket.destroy()
      return Effect.andThen(
        Metric.update(Metrics.connectionsRejected.proxy_header, 1),
        Log.debug("proxy header refused", { reason, ...(remote === undefined ? {} : { remote }) })
      )
    }

    const gate = (socket: Net.Socket): Effect.Effect<void> =>
      readHeader(socket).pipe(
        Effect.timeoutOption(deadline),
        Effect.flatMap((outcome): Effect.Effect<void> => {
          if (Option.isNone(outcome)) return refuse(socket, "late")
          const header = outcome.value
          if (header._tag === "Refused") return refuse(socket, header.reason)
          return Effect.sync(() => admit(socket, { address: header.source, port: header.sourcePort }))
        }),
        Effect.onInterrupt(() => Effect.sync(() => socket.destroy()))
      )

    server.on("connection", (socket: Net.Socket) => {
      socket.on("error", ignoreError)
      run(gate(socket))
    })
  })
