/**
 * Pipelined requests before an upgrade (SPEC §1.2). Node's HTTP server parses every request in a
 * TCP read at once and emits `upgrade` while the responses to the requests before it may still
 * be owed (they are written when their handlers finish). Anything written on the socket now — a
 * 101 or a refusal — would land before or between them: an HTTP response inside the WebSocket
 * stream, or a refusal read as the answer to an earlier request. So whatever the upgrade gets is
 * written only once every earlier response has been handed to the socket.
 *
 * Node keeps its own record of this: `socket._httpMessage` is the response that holds the
 * connection; later ones queue behind it and take it over in order as each finishes
 * (`resOnFinish` in node:_http_server). Once it is empty, nothing is owed. A response emits
 * `close` after that hand-over (or when the connection dies), so each `close` is the moment to
 * look again.
 */
import * as Effect from "effect/Effect"
import type { EventEmitter } from "node:events"
import type * as Stream from "node:stream"

/** The response Node is still writing (or about to) on this connection, if any. */
const owed = (socket: Stream.Duplex): EventEmitter | undefined =>
  (socket as Stream.Duplex & { readonly _httpMessage?: EventEmitter | null })._httpMessage ?? undefined

/**
 * Waits until no earlier response on the connection is owed. `true` when the socket can carry
 * the answer to the upgrade; `false` when the connection is gone meanwhile (nothing to answer).
 */
export const afterEarlierResponses = (socket: Stream.Duplex): Effect.Effect<boolean> => {
  // The common case, a connection that carried nothing else, never suspends.
  if (owed(socket) === undefined) return Effect.succeed(!socket.destroyed)
  return Effect.callback<boolean>((resume) => {
    let waitingOn: EventEmitter | undefined
    const stop = () => {
      waitingOn?.off("close", check)
      socket.off("close", check)
      waitingOn = undefined
    }
    function check(): void {
      stop()
      if (socket.destroyed) return resume(Effect.succeed(false))
      const response = owed(socket)
      if (response === undefined) return resume(Effect.succeed(true))
      waitingOn = response
      response.once("close", check)
      socket.once("close", check)
    }
    check()
    return Effect.sync(stop)
  })
}
