import { STATUS_CODES } from "node:http"
import type * as Net from "node:net"
import type * as Stream from "node:stream"

/**
 * Answers a request with a plain HTTP status and closes the socket (SPEC §5: before any upgrade).
 * The body is the status text only: never a header value. The socket is destroyed once the
 * answer is written, so a client that keeps sending (or never closes) cannot hold it open.
 */
export const rejectUpgrade = (socket: Stream.Duplex, status: number): void => {
  const text = STATUS_CODES[status] ?? "Error"
  const body = `${text}\n`
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  )
  const net = socket as Partial<Net.Socket>
  if (typeof net.destroySoon === "function") net.destroySoon()
}
