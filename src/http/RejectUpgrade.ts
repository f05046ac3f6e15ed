import { STATUS_CODES } from "node:http"
import type * as Stream from "node:stream"

/**
 * Answers an upgrade request with a plain HTTP status and closes the socket (SPEC §5: before any
 * upgrade). The body is the status text only: never a header value.
 */
export const rejectUpgrade = (socket: Stream.Duplex, status: number): void => {
  const text = STATUS_CODES[status] ?? "Error"
  const body = `${text}\n`
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  )
}
