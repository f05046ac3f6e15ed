/**
 * The challenge listener of ACME mode (`--http-listen`, default `:80`; EDGE.md §1). It answers
 * exactly two things:
 *
 *  * `GET /.well-known/acme-challenge/<token>` → 200 with the key authorization while that
 *    HTTP-01 challenge is pending, 404 otherwise;
 *  * `GET /readyz` → 200 once a certificate is being served, 503 before (the process is up, the
 *    TLS listener is not usable yet).
 *
 * Every other request is 404 — not a redirect to https: this port exists for the CA, and a
 * redirect would invite clients to send their first request in the clear. No PROXY protocol here.
 * Handlers are synchronous lookups, so this is a plain Node handler with no Effect per request.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import type { ListenAddress, RelayConfigShape } from "../config/RelayConfig.ts"
import { closeServer, listenOn, type ListenError, serverOptions } from "../http/Listener.ts"
import { pathOf } from "../http/UpgradeGate.ts"

export const CHALLENGE_PREFIX = "/.well-known/acme-challenge/"

/** Tokens are base64url (RFC 8555 §8.3); anything else is not one of ours. */
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/

export interface ChallengeAnswers {
  /** The key authorization of a pending challenge. */
  readonly keyAuthorization: (token: string) => string | undefined
  /** Whether the TLS listener has a certificate to serve. */
  readonly ready: () => boolean
}

const JSON_CONTENT = "application/json; charset=utf-8"

const answer = (res: Http.ServerResponse, status: number, body: string, contentType: string): void => {
  res.writeHead(status, {
    "content-type": contentType,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store"
  })
  res.end(body)
}

export const challengeHandler = (answers: ChallengeAnswers) => (req: Http.IncomingMessage, res: Http.ServerResponse): void => {
  const path = pathOf(req.url)
  if (req.method === "GET" && path.startsWith(CHALLENGE_PREFIX)) {
    const token = path.slice(CHALLENGE_PREFIX.length)
    const keyAuthorization = TOKEN.test(token) ? answers.keyAuthorization(token) : undefined
    if (keyAuthorization !== undefined) return answer(res, 200, keyAuthorization, "text/plain; charset=utf-8")
  } else if (req.method === "GET" && path === "/readyz") {
    const ready = answers.ready()
    return answer(res, ready ? 200 : 503, JSON.stringify({ status: ready ? "ready" : "no certificate" }), JSON_CONTENT)
  }
  res.writeHead(404, { "content-length": "0" })
  res.end()
}

/** Binds the challenge listener in the caller's scope; returns the bound address. */
export const bindChallengeServer = (
  address: ListenAddress,
  config: RelayConfigShape,
  answers: ChallengeAnswers
): Effect.Effect<ListenAddress, ListenError, Scope.Scope> =>
  Effect.gen(function*() {
    const server = Http.createServer(serverOptions(config), challengeHandler(answers))
    // Malformed or slow request heads: close without an answer.
    server.on("clientError", (_error: Error, socket) => socket.destroy())
    yield* Effect.acquireRelease(listenOn(server, address), closeServer)
    const bound = server.address() as AddressInfo
    return { host: bound.address, port: bound.port }
  })
