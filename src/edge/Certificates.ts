/**
 * Certificates in ACME mode (EDGE.md §1), as one scoped service: at boot it applies the cache
 * directory rules, serves a still-valid cached certificate without contacting the CA, binds the
 * challenge listener, then forks the renewal fiber (`RenewalSchedule.renewalLoop`) into its scope.
 * The TLS listener asks it for a certificate per handshake (`sniCallback`), so a renewed
 * certificate serves the next handshake with no restart and no dropped connection.
 *
 * State ownership: `served` (the certificate and its TLS context) is written only by boot and by
 * the renewal fiber, each time as one assignment of a complete value; the SNI callback and the
 * challenge listener only read it. `challenges` is written by the order in flight only.
 *
 * Outside ACME mode the service is inert: no SNI callback, no listener, no fiber.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { readFileSync } from "node:fs"
import * as Path from "node:path"
import type * as Tls from "node:tls"
import { type AcmeSettings, type ListenAddress, RelayConfig, type RelayConfigShape } from "../config/RelayConfig.ts"
import type { ListenError, SniCallback } from "../http/Listener.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { makeAcmeOrder, newPrivateKeyPem, type OrderFailed, type PendingChallenges } from "./Acme.ts"
import { type CertificateCacheError, prepareCacheDir, readCacheFile, writeCacheFile } from "./CertCache.ts"
import { type Certificate, covers, fromBundle, secureContext, toBundle } from "./CertificateBundle.ts"
import { bindChallengeServer } from "./ChallengeServer.ts"
import { renewalLoop } from "./RenewalSchedule.ts"

export interface CertificatesShape {
  /** Chooses the certificate of a TLS handshake by its SNI name; `undefined` outside ACME mode. */
  readonly sniCallback: SniCallback | undefined
  /** Expiry of the certificate being served, in seconds since the epoch; 0 when there is none. */
  readonly expirySeconds: () => number
  /** Where the challenge listener is bound; `undefined` outside ACME mode. */
  readonly challengeListen: ListenAddress | undefined
}

export class Certificates extends Context.Service<Certificates, CertificatesShape>()("pyrycode-relay/Certificates") {
  static readonly layer: Layer.Layer<
    Certificates,
    CertificateCacheError | AcmeCaFileError | ListenError,
    RelayConfig
  > = Layer.effect(
    Certificates,
    Effect.gen(function*() {
      const config = yield* RelayConfig
      if (config.acme === undefined) {
        return Certificates.of({ sniCallback: undefined, expirySeconds: () => 0, challengeListen: undefined })
      }
      return yield* make(config, config.acme)
    })
  )
}

/** `relay.example.com,b.example.com` for logs. */
const domainField = (settings: AcmeSettings): string => settings.domains.join(",")

const make = Effect.fnUntraced(function*(config: RelayConfigShape, settings: AcmeSettings) {
  const dir = settings.certCache
  const domain = domainField(settings)
  const prepared = yield* prepareCacheDir(dir, process.getuid?.())
  if (prepared === "tightened") yield* Log.info("certificate cache tightened", { cert_cache: dir })

  const extraCaPem = settings.caFile === undefined ? undefined : yield* readExtraCa(settings.caFile)
  const accountKeyPem = yield* accountKey(Path.join(dir, "account.key"))
  const bundlePath = Path.join(dir, `${settings.domains[0]!}.pem`)

  let served: { readonly certificate: Certificate; readonly context: Tls.SecureContext } | undefined
  const serve = (certificate: Certificate) => {
    served = { certificate, context: secureContext(certificate) }
  }

  // A still-valid cached certificate is served at once: restarts must not spend the CA's limits.
  const cached = yield* cachedCertificate(bundlePath, settings.domains)
  if (cached !== undefined) {
    serve(cached)
    yield* Log.info("certificate loaded", { domain, cert_cache: dir })
  }

  const names = new Set(settings.domains)
  const sniCallback: SniCallback = (servername, done) => {
    const name = servername.toLowerCase().replace(/\.$/, "")
    if (!names.has(name)) return done(new Error("server name not served here"), undefined)
    if (served === undefined) return done(new Error("no certificate yet"), undefined)
    done(null, served.context)
  }

  const challenges: PendingChallenges = new Map()
  const challengeListen = yield* bindChallengeServer(settings.httpListen, config, {
    keyAuthorization: (token) => challenges.get(token),
    ready: () => served !== undefined
  })

  const order = yield* makeAcmeOrder({
    directoryUrl: settings.directoryUrl,
    email: settings.email,
    domains: settings.domains,
    accountKeyPem,
    extraCaPem
  }, challenges)

  const renew = Effect.gen(function*() {
    const certificate = yield* order
    serve(certificate)
    yield* Metric.update(Metrics.certificateOrders.issued, 1)
    yield* Log.info("certificate issued", { domain })
    // Served already; a cache that cannot be written only costs a new order at the next boot.
    yield* writeCacheFile(bundlePath, toBundle(certificate)).pipe(
      Effect.catchTag("CertificateCacheError", (error) => Log.warn("certificate cache write failed", { domain, error: error.message }))
    )
  })

  yield* Effect.forkScoped(renewalLoop<OrderFailed>({
    current: () => served?.certificate,
    order: renew,
    failed: (error) =>
      Effect.andThen(
        Metric.update(Metrics.certificateOrders.failed, 1),
        Log.warn("certificate order failed", { domain, error: error.errorType })
      )
  }))

  return Certificates.of({
    sniCallback,
    expirySeconds: () => served === undefined ? 0 : Math.floor(served.certificate.notAfter / 1000),
    challengeListen
  })
})

/** The account key, created (and cached) on first use; the CA knows the account by it. */
const accountKey = (path: string): Effect.Effect<string, CertificateCacheError> =>
  Effect.flatMap(readCacheFile(path), (existing) => {
    if (existing !== undefined) return Effect.succeed(existing)
    const created = newPrivateKeyPem()
    return Effect.as(writeCacheFile(path, created), created)
  })

/** The cached certificate when it names every domain and has not expired; otherwise none. */
const cachedCertificate = (path: string, domains: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const text = yield* readCacheFile(path)
    if (text === undefined) return undefined
    const parsed = fromBundle(text)
    const now = yield* Clock.currentTimeMillis
    if (Result.isFailure(parsed) || !covers(parsed.success, domains) || parsed.success.notAfter <= now) {
      yield* Log.info("certificate cache ignored", { reason: Result.isFailure(parsed) ? "unreadable" : "stale or other names" })
      return undefined
    }
    return parsed.success
  })

/** `--acme-ca-file` could not be read (the relay exits 1, like unreadable TLS files). */
export class AcmeCaFileError extends Schema.TaggedError<AcmeCaFileError>()("AcmeCaFileError", {
  message: Schema.String
}) {}

const readExtraCa = (path: string): Effect.Effect<string, AcmeCaFileError> =>
  Effect.try({
    try: () => readFileSync(path, "utf8"),
    catch: (error) => new AcmeCaFileError({ message: `cannot read --acme-ca-file ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}` })
  }).pipe(Effect.filterOrFail(
    (text) => text.includes("-----BEGIN CERTIFICATE-----"),
    () => new AcmeCaFileError({ message: `--acme-ca-file ${path}: no PEM certificate in it` })
  ))
