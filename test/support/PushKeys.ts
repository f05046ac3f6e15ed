/**
 * Test keys for push wake: an RSA key pair generated for the test run, the service-account JSON
 * that carries its private half, and a JWT check against its public half (what Google's token
 * endpoint does).
 */
import { generateKeyPairSync, type KeyObject, verify } from "node:crypto"

export interface TestKey {
  readonly privateKey: KeyObject
  readonly publicKey: KeyObject
  /** PKCS#8 PEM (`BEGIN PRIVATE KEY`), as Google issues it. */
  readonly pkcs8: string
  /** PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`). */
  readonly pkcs1: string
}

export const makeTestKey = (): TestKey => {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 })
  return {
    privateKey,
    publicKey,
    pkcs8: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    pkcs1: privateKey.export({ type: "pkcs1", format: "pem" }).toString()
  }
}

export const CLIENT_EMAIL = "relay-push@pyrycode-test.iam.gserviceaccount.com"
export const PRIVATE_KEY_ID = "0123456789abcdef0123456789abcdef01234567"

/** A service-account key as Google's console writes it, with `overrides` applied (undefined deletes). */
export const serviceAccountJson = (
  key: TestKey,
  overrides: Readonly<Record<string, unknown>> = {}
): string => {
  const json: Record<string, unknown> = {
    type: "service_account",
    project_id: "pyrycode-test",
    private_key_id: PRIVATE_KEY_ID,
    private_key: key.pkcs8,
    client_email: CLIENT_EMAIL,
    client_id: "123456789012345678901",
    auth_uri: "https://accounts.google.com/o/oauth2/auth",
    token_uri: "https://oauth2.googleapis.com/token"
  }
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) delete json[k]
    else json[k] = v
  }
  return JSON.stringify(json, null, 2)
}

export interface VerifiedJwt {
  readonly header: Record<string, unknown>
  readonly claims: Record<string, unknown>
}

/** The JWT's header and claims if its RS256 signature verifies against `publicKey`, else undefined. */
export const verifyJwt = (jwt: string, publicKey: KeyObject): VerifiedJwt | undefined => {
  const parts = jwt.split(".")
  if (parts.length !== 3) return undefined
  const [header, claims, signature] = parts as [string, string, string]
  const ok = verify("sha256", Buffer.from(`${header}.${claims}`), publicKey, Buffer.from(signature, "base64url"))
  if (!ok) return undefined
  return {
    header: JSON.parse(Buffer.from(header, "base64url").toString()) as Record<string, unknown>,
    claims: JSON.parse(Buffer.from(claims, "base64url").toString()) as Record<string, unknown>
  }
}
