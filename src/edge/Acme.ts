/**
 * One certificate order against an ACME CA (RFC 8555) through `acme-client`: account (created or
 * found again by its key, terms of service accepted on the operator's behalf), order for exactly
 * the configured names, HTTP-01 challenges answered by the challenge listener, finalization with
 * a fresh P-256 key, download. No JWS or protocol code of our own.
 *
 * `acme-client` keeps its HTTP settings on one module-wide axios instance, so they are set here
 * for the whole process: its own retries are off, because the renewal loop already retries whole
 * orders with backoff; `--acme-ca-file` is trusted on top of the system roots; a connection that
 * is silent for 30 s is cut. What went wrong is logged as one token: the CA's error type
 * (`urn:ietf:params:acme:error:…`), read off responses as they pass, or the network error code,
 * read off the sockets — the errors `acme-client` throws carry only the CA's prose, and for a
 * network failure not even the code.
 */
import { generateKeyPairSync } from "node:crypto"
import * as Https from "node:https"
import type * as Net from "node:net"
import * as Tls from "node:tls"
import type * as AcmeClient from "acme-client"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { type Certificate, makeCertificate } from "./CertificateBundle.ts"

/** An order that did not end in a certificate; `errorType` is all that is logged. */
export class OrderFailed extends Schema.TaggedError<OrderFailed>()("OrderFailed", {
  errorType: Schema.String
}) {}

export interface AcmeOrderSettings {
  readonly directoryUrl: string
  readonly email: string | undefined
  readonly domains: ReadonlyArray<string>
  /** PEM; the same key for every order, so the CA finds the same account. */
  readonly accountKeyPem: string
  readonly extraCaPem: string | undefined
}

/** Pending HTTP-01 challenges by token, read by the challenge listener. */
export type PendingChallenges = Map<string, string>

/** Longest an order may take before it counts as failed (the CA is then asked again later). */
export const ORDER_TIMEOUT: Duration.Duration = Duration.minutes(10)

/** A connection to the CA silent this long is cut (a socket timeout, as Node's own server deadlines are). */
const SILENCE_TIMEOUT_MS = 30_000

/** A new P-256 private key in PKCS#8 PEM (certificate keys, and the account key). */
export const newPrivateKeyPem = (): string =>
  generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }).toString()

interface ProblemDocument {
  readonly type?: unknown
  readonly status?: unknown
  readonly error?: { readonly type?: unknown }
}

/** The ACME problem type in a response body, if it carries one. */
const problemType = (data: unknown): string | undefined => {
  if (typeof data !== "object" || data === null) return undefined
  const doc = data as ProblemDocument
  if (typeof doc.type === "string" && doc.type.startsWith("urn:")) return doc.type
  if (doc.status === "invalid" && typeof doc.error?.type === "string") return doc.error.type
  return undefined
}

/** What failed, in one token: the last CA problem type or network error seen, else the error's code. */
const errorTypeOf = (error: unknown, lastSeen: string | undefined): string => {
  if (lastSeen !== undefined) return lastSeen
  const code = (error as { code?: unknown }).code
  return typeof code === "string" && code !== "" ? code : "unknown"
}

/** An HTTPS agent that reports each connection's error code, and cuts silent connections. */
const recordingAgent = (options: Https.AgentOptions, onError: (code: string) => void): Https.Agent => {
  const agent = new Https.Agent(options)
  const create = agent.createConnection.bind(agent)
  agent.createConnection = (connectOptions, callback) => {
    const socket = create(connectOptions, callback) as Net.Socket | null | undefined
    socket?.once("error", (error: NodeJS.ErrnoException) => onError(error.code ?? "network"))
    socket?.setTimeout(SILENCE_TIMEOUT_MS, () =>
      socket.destroy(Object.assign(new Error("no answer from the CA"), { code: "ETIMEDOUT" })))
    return socket
  }
  return agent
}

/**
 * The order function for these settings. Scoped: the response watcher is removed with the scope.
 * `challenges` is filled while the CA validates and emptied after.
 */
export const makeAcmeOrder = (
  settings: AcmeOrderSettings,
  challenges: PendingChallenges
): Effect.Effect<Effect.Effect<Certificate, OrderFailed>, never, Scope.Scope> =>
  Effect.gen(function*() {
    // Loaded on the first use only: acme-client (with axios) is ~40 MB of RSS a relay without
    // --domain never needs.
    const loaded = yield* Effect.promise(() => import("acme-client"))
    // A CommonJS module: Node's import gives its named exports, the service bundle's chunk
    // (esbuild `--splitting`) only `default` — the same object either way.
    const acme: typeof AcmeClient = "Client" in loaded ? loaded : (loaded as { default: typeof AcmeClient }).default
    // The last problem the order in flight ran into (reset at its start): a retried bad nonce
    // followed by a refused connection reports the connection.
    let lastSeen: string | undefined
    const http = acme.axios as unknown as {
      defaults: { httpsAgent: Https.Agent; acmeSettings: { retryMaxAttempts: number } }
    }
    http.defaults.acmeSettings.retryMaxAttempts = 0
    http.defaults.httpsAgent = recordingAgent(
      settings.extraCaPem === undefined ? {} : { ca: [...Tls.rootCertificates, settings.extraCaPem] },
      (code) => (lastSeen = code)
    )

    yield* Effect.acquireRelease(
      Effect.sync(() =>
        acme.axios.interceptors.response.use((response) => {
          const type = problemType(response.data)
          if (type !== undefined) lastSeen = type
          return response
        })
      ),
      (id) => Effect.sync(() => acme.axios.interceptors.response.eject(id))
    )

    // One client for the process: it remembers the account URL after the first order.
    const client = new acme.Client({
      directoryUrl: settings.directoryUrl,
      accountKey: settings.accountKeyPem,
      backoffAttempts: 10,
      backoffMin: 1_000,
      backoffMax: 10_000
    })

    const run = async (): Promise<Certificate> => {
      lastSeen = undefined
      const keyPem = newPrivateKeyPem()
      const [, csr] = await acme.crypto.createCsr(
        { commonName: settings.domains[0]!, altNames: [...settings.domains] },
        keyPem
      )
      const chain = await client.auto({
        csr,
        ...(settings.email === undefined ? {} : { email: settings.email }),
        termsOfServiceAgreed: true,
        challengePriority: ["http-01"],
        // The CA's validation is the one that counts; a self-check from inside would need the
        // relay to reach its own public name (hairpin NAT), which many networks do not allow.
        skipChallengeVerification: true,
        challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
          if (challenge.type !== "http-01") throw new Error(`unexpected challenge type ${challenge.type}`)
          challenges.set(challenge.token, keyAuthorization)
        },
        challengeRemoveFn: async (_authz, challenge) => {
          challenges.delete(challenge.token)
        }
      })
      const certificate = makeCertificate(keyPem, chain)
      if (Result.isFailure(certificate)) throw Object.assign(new Error(certificate.failure), { code: "invalid_certificate" })
      return certificate.success
    }

    return Effect.tryPromise({
      try: run,
      catch: (error) => new OrderFailed({ errorType: errorTypeOf(error, lastSeen) })
    }).pipe(
      Effect.timeoutOption(ORDER_TIMEOUT),
      Effect.flatMap(Option.match({
        onNone: () => Effect.fail(new OrderFailed({ errorType: "timeout" })),
        onSome: Effect.succeed
      }))
    )
  })
