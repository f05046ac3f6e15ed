import { STATUS_CODES } from "node:http"
import type * as Net from "node:net"
import type * as Stream from "node:stream"

/**
 * The header lines a refusal must carry, fixed per status (never from the request): 405 names
 * the one method (RFC 9110 §15.5.6); 426 names the one WebSocket version (RFC 6455 §4.4) and,
 * as every 426 must, the protocol to upgrade to with its `Connection` option (RFC 9110 §7.8).
 */
const EXTRA: Readonly<Record<number, string>> = {
  405: "Connection: close\r\nAllow: GET\r\n",
  426: "Connection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
}

/**
 * Answers a request with a plain HTTP status and closes the socket (SPEC §5: before any upgrade).
 * The body is the status text only: never a header value. The socket is destroyed once the
 * answer is written, so a client that keeps sending (or never closes) cannot hold it open.
 */
export const rejectUpgrade = (socket: Stream.Duplex, status: number): void => {
  const text = STATUS_CODES[status] ?? "Error"
  const body = `${text}\n`
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\n${EXTRA[status] ?? "Connection: close\r\n"}` +
      `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  )
  const net = socket as Partial<Net.Socket>
  if (typeof net.destroySoon === "function") net.destroySoon()
}
