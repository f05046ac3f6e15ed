/**
 * Clients that speak PROXY protocol v2 to a relay, and raw TCP peers that record exactly what the
 * relay wrote back (EDGE.md §3: a refused connection is closed with zero bytes written).
 */
import * as Http from "node:http"
import * as Net from "node:net"
import * as Tls from "node:tls"
import { proxyV2 } from "./ProxyV2.ts"

export interface RawOutcome {
  /** Every byte the relay wrote. */
  readonly received: Buffer
  /** Milliseconds from connect until the relay closed (or reset) the connection. */
  readonly closedAfterMs: number
}

export interface RawPeer {
  readonly socket: Net.Socket
  readonly write: (bytes: Buffer | string) => void
  /** Resolves when the connection is gone, with what was received. */
  readonly outcome: Promise<RawOutcome>
  readonly isClosed: () => boolean
}

/** A TCP connection that only records. Errors (a reset) count as closed. */
export const rawConnect = (port: number, localAddress?: string): Promise<RawPeer> =>
  new Promise((resolve, reject) => {
    const started = Date.now()
    const chunks: Array<Buffer> = []
    let closed = false
    const socket = Net.connect({ host: "127.0.0.1", port, ...(localAddress ? { localAddress } : {}) })
    socket.on("data", (d: Buffer) => chunks.push(d))
    socket.on("error", () => {})
    const outcome = new Promise<RawOutcome>((done) =>
      socket.once("close", () => {
        closed = true
        done({ received: Buffer.concat(chunks), closedAfterMs: Date.now() - started })
      })
    )
    socket.once("connect", () =>
      resolve({
        socket,
        write: (bytes) => {
          if (!socket.destroyed) socket.write(bytes)
        },
        outcome,
        isClosed: () => closed
      })
    )
    socket.once("error", reject)
  })

/**
 * A `createConnection` for `ws` and `http` clients that opens the TCP connection, writes a PROXY
 * v2 header claiming `source`, then lets the client speak (over TLS when `tls` is given).
 */
export const viaProxy = (source: string, tls?: Tls.ConnectionOptions): typeof Net.createConnection => {
  const connect = (options: Net.NetConnectOpts): Net.Socket => {
    const { host, port } = options as Net.TcpNetConnectOpts
    const raw = Net.connect({ host: host ?? "127.0.0.1", port: Number(port) })
    raw.write(proxyV2({ source, family: Net.isIPv6(source) ? 2 : 1 }))
    const servername = (options as Tls.ConnectionOptions).servername
    return tls === undefined
      ? raw
      : Tls.connect({ host: host ?? "127.0.0.1", ...(servername ? { servername } : {}), ...tls, socket: raw })
  }
  // Clients call it with an options object only; the other overloads are never used.
  return connect as typeof Net.createConnection
}

/** `GET path` over a connection that starts with a PROXY header; resolves with status and body. */
export const proxiedGet = (
  port: number,
  path: string,
  source: string,
  tls?: Tls.ConnectionOptions
): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    const req = Http.request({
      host: "127.0.0.1",
      port,
      path,
      // No agent: Node uses `createConnection` only when none is given (an agent dials itself).
      headers: { connection: "close" },
      createConnection: (options) => viaProxy(source, tls)(options as Net.NetConnectOpts)
    }, (res) => {
      let body = ""
      res.on("data", (d: Buffer) => (body += d.toString()))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.once("error", reject)
    req.end()
  })

/** One series' value from a `/metrics` scrape, `undefined` when the series is absent. */
export const metricValue = async (metricsUrl: string, series: string): Promise<number | undefined> => {
  const text = await (await fetch(metricsUrl)).text()
  for (const line of text.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1))
  }
  return undefined
}
