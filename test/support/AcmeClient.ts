/**
 * Clients of a relay in ACME mode: TLS handshakes and HTTPS requests that name a host (SNI and
 * `Host`) while dialling 127.0.0.1, plain HTTP to its challenge listener, and the flags the ACME
 * tests start it with.
 */
import * as Https from "node:https"
import * as Tls from "node:tls"
import type WebSocket from "ws"
import { eventually } from "./Peers.ts"
import { startRelay } from "./RelayProcess.ts"

export const DOMAIN = "relay.pyrycode.test"
export const OTHER = "alt.pyrycode.test"
export const ISSUED = `pyrycode_relay_certificate_orders_total{outcome="issued"}`
export const FAILED = `pyrycode_relay_certificate_orders_total{outcome="failed"}`
export const EXPIRY = "pyrycode_relay_certificate_expiry_timestamp_seconds"

/** Polls the challenge listener's /readyz until 200; returns how long it took. */
export const untilReady = async (httpPort: number, timeoutMs: number): Promise<number> => {
  const started = Date.now()
  await eventually(async () => (await challengeRequest(httpPort, "/readyz").catch(() => ({ status: 0 }))).status === 200, timeoutMs)
  return Date.now() - started
}

/** ACME mode for both names against `pebble`, challenges on `httpPort`. */
export const acmeFlags = (pebble: { directoryUrl: string; caFile: string }, cache: string, httpPort: number) => [
  "--domain", `${DOMAIN},${OTHER}`,
  "--acme-directory", pebble.directoryUrl,
  "--acme-ca-file", pebble.caFile,
  "--acme-email", "ops@pyrycode.test",
  "--cert-cache", cache,
  "--http-listen", `127.0.0.1:${httpPort}`
]

/** `ws` passes `servername` on to `tls.connect` (its types do not list it). */
export const sni = (servername: string) => ({ servername }) as WebSocket.ClientOptions

/** The relay process in ACME mode (the public port given as --https-listen). */
export const startAcmeRelay = (flags: ReadonlyArray<string>) => startRelay(flags, { tls: true, listenFlag: "--https-listen" })


export interface Handshake {
  readonly serial?: string
  readonly names?: string
  readonly error?: string
}

/** A TLS handshake with `servername` (none when `undefined`); the served certificate's serial. */
export const handshake = (port: number, servername: string | undefined, ca: string | Buffer): Promise<Handshake> =>
  new Promise((resolve) => {
    const socket = Tls.connect({
      host: "127.0.0.1",
      port,
      ca,
      ...(servername === undefined ? { servername: "" } : { servername }),
      // Identity is checked against the name asked for; with no name there is nothing to check.
      ...(servername === undefined ? { checkServerIdentity: () => undefined } : {})
    }, () => {
      const certificate = socket.getPeerCertificate()
      socket.end()
      resolve({ serial: certificate.serialNumber, ...(certificate.subjectaltname ? { names: certificate.subjectaltname } : {}) })
    })
    socket.once("error", (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }))
  })

/** HTTPS `method path` to 127.0.0.1 with this SNI name and this `Host` header. */
export const httpsRequest = (
  port: number,
  options: { servername: string; host: string | undefined; path: string; ca: string | Buffer; method?: string }
): Promise<{ status: number; body: string; headers: Record<string, unknown> }> =>
  new Promise((resolve, reject) => {
    const req = Https.request({
      host: "127.0.0.1",
      port,
      method: options.method ?? "GET",
      path: options.path,
      servername: options.servername,
      ca: options.ca,
      agent: false,
      setHost: false,
      headers: options.host === undefined ? {} : { host: options.host }
    }, (res) => {
      let body = ""
      res.on("data", (d: Buffer) => (body += d.toString()))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }))
    })
    req.once("error", reject)
    req.end()
  })

/** Plain HTTP to the challenge listener. */
export const challengeRequest = async (
  port: number,
  path: string,
  method = "GET"
): Promise<{ status: number; body: string; location: string | null }> => {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, { method, redirect: "manual" })
  return { status: response.status, body: await response.text(), location: response.headers.get("location") }
}
