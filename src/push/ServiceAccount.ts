/**
 * The push settings checked at boot (PUSH.md §1): the Google service-account key, the FCM base
 * URL and the project id. Pure: every check returns a value or a reason, and `Cli.ts` names the
 * flag or variable.
 *
 * A key that does not pass is refused with one fixed reason, whatever was wrong with it: a
 * refusal must never echo, quote or hint at any part of a secret (not even which field failed,
 * since a field's name next to "missing" tells nothing useful and a value would leak).
 */
import { createPrivateKey, type KeyObject } from "node:crypto"
import { closeSync, openSync, readSync } from "node:fs"
import { isIPv4 } from "node:net"
import * as Result from "effect/Result"
import type { Parsed } from "../config/Units.ts"
import { show } from "../config/Units.ts"

export interface FcmCredentials {
  /** The JWT's `iss`. */
  readonly clientEmail: string
  /** RSA, checked at boot; signs the JWT (RS256). */
  readonly privateKey: KeyObject
  /** The JWT header's `kid`, when the key names one. */
  readonly privateKeyId: string | undefined
  /** Where the JWT is exchanged for an access token (the JWT's `aud`). */
  readonly tokenUri: string
}

export const DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
export const DEFAULT_FCM_ENDPOINT = "https://fcm.googleapis.com"
export const DEFAULT_FCM_PROJECT_ID = "pyrycode-mobile"

/** The only reason a bad key is ever refused with. */
export const NOT_A_KEY = "not a service-account JSON key (value withheld)"

/** `127.x.y.z`, `[::1]` or `localhost`: the hosts plain `http://` is allowed to (tests, a local gateway). */
const isLoopbackHost = (hostname: string): boolean =>
  hostname === "localhost" || hostname === "[::1]" || (isIPv4(hostname) && hostname.split(".")[0] === "127")

/**
 * An `https://` URL, or `http://` to a loopback host, with no user info, query or fragment (a
 * token must never travel in clear over a network, nor be replayed to a host hidden in a URL).
 */
export const checkServiceUrl = (raw: string): Parsed<URL> => {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return Result.fail(`${show(raw)} is not a URL`)
  }
  // User info may be a credential: say what is wrong without quoting it.
  if (url.username !== "" || url.password !== "") return Result.fail("must not carry user info (value withheld)")
  if (url.protocol !== "https:" && !(url.protocol === "http:" && isLoopbackHost(url.hostname))) {
    return Result.fail(`${show(raw)} must be https:// (http:// only to 127.x.y.z, [::1] or localhost)`)
  }
  if (url.search !== "" || url.hash !== "" || raw.includes("?") || raw.includes("#")) {
    return Result.fail(`${show(raw)} must not have a query or fragment`)
  }
  return Result.succeed(url)
}

/** The FCM base URL (`--fcm-endpoint`), without a trailing slash so paths can be appended. */
export const parseFcmEndpoint = (raw: string): Parsed<string> =>
  Result.map(checkServiceUrl(raw), (url) => url.href.replace(/\/+$/, ""))

/** Google project ids are lower-case letters, digits and hyphens; older ones may carry `domain:` and dots. */
const PROJECT_ID = /^[A-Za-z0-9][A-Za-z0-9.:_-]{0,127}$/

export const parseProjectId = (raw: string): Parsed<string> =>
  PROJECT_ID.test(raw) ? Result.succeed(raw) : Result.fail(`${show(raw)} is not a project id`)

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** `undefined` and `null` both mean "not given" for the optional fields. */
const optionalString = (u: unknown): string | undefined | false =>
  u === undefined || u === null ? undefined : typeof u === "string" ? u : false

/**
 * A Google service-account JSON key (PUSH.md §1): `type` = `"service_account"`, a non-empty
 * `client_email`, an RSA `private_key` in PEM (PKCS#8 or PKCS#1), optional `private_key_id` and
 * `token_uri`. `undefined` for anything else; the caller refuses with `NOT_A_KEY`.
 */
export const parseServiceAccount = (text: string): FcmCredentials | undefined => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return undefined
  }
  if (!isRecord(json) || json["type"] !== "service_account") return undefined
  const clientEmail = json["client_email"]
  const pem = json["private_key"]
  if (typeof clientEmail !== "string" || clientEmail === "" || typeof pem !== "string") return undefined
  const privateKeyId = optionalString(json["private_key_id"])
  const tokenUriRaw = optionalString(json["token_uri"])
  if (privateKeyId === false || tokenUriRaw === false) return undefined
  // Kept as written: it is also the JWT's `aud`, which the token endpoint compares as text.
  const tokenUri = tokenUriRaw ?? DEFAULT_TOKEN_URI
  if (Result.isFailure(checkServiceUrl(tokenUri))) return undefined
  let privateKey: KeyObject
  try {
    // PEM only (no DER, no JWK); an encrypted key fails here for want of a passphrase.
    privateKey = createPrivateKey({ key: pem, format: "pem" })
  } catch {
    return undefined
  }
  // RS256 needs plain RSA (RSASSA-PKCS1-v1_5); an RSA-PSS-only key cannot make that signature.
  if (privateKey.asymmetricKeyType !== "rsa") return undefined
  return {
    clientEmail,
    privateKey,
    privateKeyId: privateKeyId === "" ? undefined : privateKeyId,
    tokenUri
  }
}

/** A service-account key is ~2.4 KB; anything much larger is not one (and must not be read whole). */
export const MAX_KEY_FILE_BYTES = 65_536

/**
 * The text of `--fcm-credentials-file`, or why it cannot be had: a Node error code, or `too
 * large`. Synchronous: it runs once, at boot, before anything is bound. Reads at most one byte
 * past the limit, so a device or a pipe cannot stall or flood the boot.
 */
export const readKeyFile = (path: string): { readonly text: string } | { readonly problem: string } => {
  let fd: number | undefined
  try {
    fd = openSync(path, "r")
    const buffer = Buffer.alloc(MAX_KEY_FILE_BYTES + 1)
    let length = 0
    for (;;) {
      const n = readSync(fd, buffer, length, buffer.length - length, null)
      if (n === 0) break
      length += n
      if (length > MAX_KEY_FILE_BYTES) return { problem: "too large" }
    }
    return { text: buffer.toString("utf8", 0, length) }
  } catch (error) {
    const code = (error as { code?: unknown }).code
    return { problem: typeof code === "string" && /^[A-Z0-9_]{1,32}$/.test(code) ? code : "unreadable" }
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}
