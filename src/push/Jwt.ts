/**
 * The OAuth 2.0 JWT-bearer assertion (RFC 7523) that buys an FCM access token (PUSH.md §3.1):
 * RS256 over `base64url(header).base64url(claims)`, signed with `node:crypto`. One signature per
 * token fetch, so no JWT library: the encoding is JSON and base64url, nothing more.
 *
 * The JWT is a credential for as long as it lives (one hour): it only ever goes into the token
 * request's body, never into a log or an error.
 */
import { sign } from "node:crypto"
import type { FcmCredentials } from "./ServiceAccount.ts"

export const FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

/** A JWT is good for one hour (the most Google accepts). */
export const ASSERTION_LIFETIME_SECONDS = 3600

const segment = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString("base64url")

/** The signed assertion for `credentials`, issued at `nowSeconds` (Unix time, from `Clock`). */
export const signAssertion = (credentials: FcmCredentials, nowSeconds: number): string => {
  const header = credentials.privateKeyId === undefined
    ? { alg: "RS256", typ: "JWT" }
    : { alg: "RS256", typ: "JWT", kid: credentials.privateKeyId }
  const claims = {
    iss: credentials.clientEmail,
    scope: FCM_SCOPE,
    aud: credentials.tokenUri,
    iat: nowSeconds,
    exp: nowSeconds + ASSERTION_LIFETIME_SECONDS
  }
  const signingInput = `${segment(header)}.${segment(claims)}`
  // RSA keys sign RSASSA-PKCS1-v1_5 by default: with SHA-256 that is RS256.
  const signature = sign("sha256", Buffer.from(signingInput), credentials.privateKey).toString("base64url")
  return `${signingInput}.${signature}`
}
