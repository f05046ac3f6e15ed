/**
 * The Host check of the TLS listener in ACME mode (EDGE.md §2): a request whose `Host` (port
 * stripped, case-insensitive) is not one of the configured domains gets **421** with an empty
 * body before anything else runs — `/healthz` and the WebSocket paths alike. An empty Host, a
 * longer name that merely starts with a domain, or an IP literal are all misdirected.
 *
 * `hostName`/`hostAllowed` are pure; `guardRequests`/`guardUpgrades` wrap the server's handlers.
 */
import type * as Http from "node:http"
import type * as Net from "node:net"
import type * as Stream from "node:stream"

/**
 * The name a `Host` value asks for: without the port, lower case, without a trailing dot.
 * `[v6]:port` gives the bracketed literal (which never equals a DNS name). `undefined` for a
 * missing or empty value.
 */
export const hostName = (host: string | undefined): string | undefined => {
  if (host === undefined) return undefined
  const trimmed = host.trim()
  if (trimmed === "") return undefined
  let name: string
  if (trimmed.startsWith("[")) {
    const end = trimmed.indexOf("]")
    name = end === -1 ? trimmed : trimmed.slice(0, end + 1)
  } else {
    const colon = trimmed.indexOf(":")
    name = colon === -1 ? trimmed : trimmed.slice(0, colon)
  }
  name = name.toLowerCase()
  return name.endsWith(".") ? name.slice(0, -1) : name
}

/** Whether a request with this `Host` is for one of `domains` (lower case, as configured). */
export const hostAllowed = (host: string | undefined, domains: ReadonlySet<string>): boolean => {
  const name = hostName(host)
  return name !== undefined && domains.has(name)
}

const MISDIRECTED = "HTTP/1.1 421 Misdirected Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

type RequestHandler = (req: Http.IncomingMessage, res: Http.ServerResponse) => void
type UpgradeHandler = (req: Http.IncomingMessage, socket: Stream.Duplex, head: Buffer) => void

/** `handler`, answering 421 (empty body, connection closed) first when the Host is not ours. */
export const guardRequests = (domains: ReadonlySet<string>, handler: RequestHandler): RequestHandler => (req, res) => {
  if (hostAllowed(req.headers.host, domains)) return handler(req, res)
  res.shouldKeepAlive = false
  res.writeHead(421, { "content-length": "0", connection: "close" })
  res.end()
}

/** `handler` for upgrades, answering 421 on the raw socket first when the Host is not ours. */
export const guardUpgrades = (domains: ReadonlySet<string>, handler: UpgradeHandler): UpgradeHandler => (req, socket, head) => {
  if (hostAllowed(req.headers.host, domains)) return handler(req, socket, head)
  socket.on("error", () => {})
  socket.end(MISDIRECTED)
  const net = socket as Partial<Net.Socket>
  if (typeof net.destroySoon === "function") net.destroySoon()
}
