/**
 * Malformed or late request heads on the relay's own listener (SPEC §5, §6): with a `clientError`
 * listener Node writes no response of its own, so the relay answers 400 (garbage), 408 (too slow:
 * the handshake timeout, counted) or 431 (too big), after the responses owed to requests
 * pipelined before, and destroys connections that reset.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as Stream from "node:stream"
import * as Metrics from "../observability/Metrics.ts"
import { afterEarlierResponses } from "./EarlierResponses.ts"
import { rejectUpgrade } from "./RejectUpgrade.ts"

/** The status for a request head Node could not take: too slow (slowloris), too big, or garbage. */
const clientErrorStatus = (code: string | undefined): number | undefined => {
  switch (code) {
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return 408
    case "HPE_HEADER_OVERFLOW":
      return 431
    case "ECONNRESET":
    case "EPIPE":
      return undefined
    default:
      return 400
  }
}

/**
 * The server's `clientError` listener; `run` runs an effect in the relay's context. Node reports
 * a parse error again for every further read of a connection, so only the first report of a
 * connection is answered.
 */
export const makeClientErrorListener = (run: (effect: Effect.Effect<void>) => void) => {
  const answered = new WeakSet<Stream.Duplex>()
  return (error: NodeJS.ErrnoException, socket: Stream.Duplex): void => {
    if (answered.has(socket)) return
    answered.add(socket)
    const status = clientErrorStatus(error.code)
    if (status === 408) run(Metric.update(Metrics.connectionsRejected.handshake_timeout, 1))
    if (status === undefined) return void socket.destroy()
    // Like an upgrade's answer, this one follows the responses owed to requests pipelined before.
    run(Effect.map(afterEarlierResponses(socket), (alive) => {
      if (alive && socket.writable) rejectUpgrade(socket, status)
      else socket.destroy()
    }))
  }
}
