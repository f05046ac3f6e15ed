/**
 * Google, faked on loopback for push wake tests (PUSH.md §5): an OAuth token endpoint that checks
 * the form and verifies the JWT's RS256 signature against the test key's public half, and an FCM
 * endpoint scripted by the device token it is asked to wake. Plus a server that must never be
 * contacted (where FCM's redirect points).
 */
import { randomBytes } from "node:crypto"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import type { KeyObject } from "node:crypto"
import { verifyJwt } from "./PushKeys.ts"

/** Free text planted in every reply, which must never reach a log, an error or a metric. */
export const REPLY_SECRET = "REPLY-FREE-TEXT-7f3a9c"

const readBody = (req: Http.IncomingMessage): Promise<string> =>
  new Promise((resolve) => {
    let body = ""
    req.setEncoding("utf8")
    req.on("data", (chunk: string) => (body += chunk))
    req.on("end", () => resolve(body))
  })

const listen = (server: Http.Server): Promise<string> =>
  new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`))
  )

const close = (server: Http.Server): Promise<void> =>
  new Promise((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  })

export interface FakeOAuth {
  readonly url: string
  /** The token URI to put in the service-account key. */
  readonly tokenUri: string
  /** Every token request, with whether its JWT verified. */
  readonly requests: Array<{ readonly verified: boolean; readonly assertion: string }>
  /** Every access token handed out. */
  readonly issued: Array<string>
  readonly close: () => Promise<void>
}

/** Answers `{"access_token":…,"token_type":"Bearer","expires_in":3600}` to a valid JWT-bearer request, 400 otherwise. */
export const startFakeOAuth = async (publicKey: KeyObject): Promise<FakeOAuth> => {
  const requests: FakeOAuth["requests"] = []
  const issued: Array<string> = []
  let tokenUri = ""
  const server = Http.createServer(async (req, res) => {
    const body = await readBody(req)
    const form = new URLSearchParams(body)
    const assertion = form.get("assertion") ?? ""
    const jwt = verifyJwt(assertion, publicKey)
    const now = Math.floor(Date.now() / 1000)
    const claims = jwt?.claims
    const verified = req.method === "POST" &&
      req.headers["content-type"] === "application/x-www-form-urlencoded" &&
      form.get("grant_type") === "urn:ietf:params:oauth:grant-type:jwt-bearer" &&
      jwt !== undefined &&
      jwt.header["alg"] === "RS256" &&
      claims?.["scope"] === "https://www.googleapis.com/auth/firebase.messaging" &&
      claims["aud"] === tokenUri &&
      typeof claims["iat"] === "number" && Math.abs(claims["iat"] - now) < 60 &&
      claims["exp"] === claims["iat"] + 3600
    requests.push({ verified, assertion })
    if (!verified) {
      res.writeHead(400, { "content-type": "application/json" })
      res.end(JSON.stringify({ error: "invalid_grant", error_description: `Invalid JWT ${REPLY_SECRET}` }))
      return
    }
    const token = `ya29.${randomBytes(24).toString("base64url")}`
    issued.push(token)
    res.writeHead(200, { "content-type": "application/json" })
    res.end(JSON.stringify({ access_token: token, token_type: "Bearer", expires_in: 3600 }))
  })
  const url = await listen(server)
  tokenUri = `${url}/token`
  return { url, tokenUri, requests, issued, close: () => close(server) }
}

export interface FcmRequest {
  readonly path: string
  readonly authorization: string | undefined
  readonly contentType: string | undefined
  readonly body: string
  readonly deviceToken: string
}

export interface FakeFcm {
  readonly url: string
  readonly requests: Array<FcmRequest>
  readonly close: () => Promise<void>
}

const fcmError = (code: number, status: string, errorCode?: string) =>
  JSON.stringify({
    error: {
      code,
      message: `Something about the request ${REPLY_SECRET}`,
      status,
      ...(errorCode === undefined
        ? {}
        : { details: [{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", errorCode }] })
    }
  })

/**
 * FCM HTTP v1, scripted by the device token's prefix: `ok-` 200 with a message name;
 * `unregistered-` 404 UNREGISTERED; `invalid-` 400 INVALID_ARGUMENT; `broken-` 500;
 * `unauthorized-` 401; `redirect-` 307 to `elsewhere`; `hang-` no reply at all; `trickle-` a
 * 200 whose body never ends; `huge-` a 1 MiB 404 whose UNREGISTERED detail sits after 1 MiB of
 * text; `slow-` 200 after 500 ms.
 */
export const startFakeFcm = async (elsewhere: string): Promise<FakeFcm> => {
  const requests: Array<FcmRequest> = []
  const server = Http.createServer(async (req, res) => {
    const body = await readBody(req)
    let deviceToken = ""
    try {
      deviceToken = String((JSON.parse(body) as { message: { token: string } }).message.token)
    } catch {
      // left empty: the test sees the body
    }
    requests.push({
      path: req.url ?? "",
      authorization: req.headers["authorization"],
      contentType: req.headers["content-type"],
      body,
      deviceToken
    })
    const json = (status: number, text: string) => {
      res.writeHead(status, { "content-type": "application/json" })
      res.end(text)
    }
    const kind = deviceToken.split("-")[0]
    switch (kind) {
      case "ok":
        return json(200, JSON.stringify({ name: "projects/pyrycode-e2e/messages/0:1700000000000000%31bd1c9631bd1c96" }))
      case "slow":
        return setTimeout(() => json(200, JSON.stringify({ name: "projects/pyrycode-e2e/messages/0:2" })), 500)
      case "unregistered":
        return json(404, fcmError(404, "NOT_FOUND", "UNREGISTERED"))
      case "invalid":
        return json(400, fcmError(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"))
      case "broken":
        res.writeHead(500, { "content-type": "text/html" })
        return res.end(`<html><body>Internal error ${REPLY_SECRET}</body></html>`)
      case "unauthorized":
        return json(401, fcmError(401, "UNAUTHENTICATED"))
      case "redirect":
        res.writeHead(307, { location: `${elsewhere}${req.url ?? "/"}` })
        return res.end(REPLY_SECRET)
      case "hang":
        return // never answers
      case "trickle":
        res.writeHead(200, { "content-type": "application/json" })
        return res.write(`{"name":"projects/pyrycode-e2e/messages/`) // never ends
      case "huge": {
        const text = JSON.stringify({
          error: {
            code: 404,
            message: `${REPLY_SECRET} ${"x".repeat(1024 * 1024)}`,
            status: "NOT_FOUND",
            details: [{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", errorCode: "UNREGISTERED" }]
          }
        })
        return json(404, text)
      }
      default:
        return json(400, fcmError(400, "INVALID_ARGUMENT"))
    }
  })
  const url = await listen(server)
  return { url, requests, close: () => close(server) }
}

/** A server that counts every connection: where a redirect points, which must never be followed. */
export const startElsewhere = async (): Promise<{ url: string; contacts: () => number; close: () => Promise<void> }> => {
  let contacts = 0
  const server = Http.createServer((_req, res) => res.end("elsewhere"))
  server.on("connection", () => contacts++)
  const url = await listen(server)
  return { url, contacts: () => contacts, close: () => close(server) }
}
