/**
 * A wake envelope's `push_wake` object (PUSH.md §2 step 2). Pure. The envelope codec has already
 * checked it is a JSON object; here its `platform` and `token` are read.
 */
import { createHash } from "node:crypto"

/** Device tokens are ~160 bytes today; 4 KiB leaves room and bounds what a binary can make us send. */
export const MAX_TOKEN_BYTES = 4096

export type WakeRefusal = "malformed" | "unsupported platform" | "empty token" | "token too long"

export type WakeRequest =
  | { readonly _tag: "Valid"; readonly token: string }
  | { readonly _tag: "Refused"; readonly reason: WakeRefusal }

const refused = (reason: WakeRefusal): WakeRequest => ({ _tag: "Refused", reason })

/** `pushWake` is the UTF-8 of the `push_wake` value (a JSON object, as the envelope codec found it). */
export const readWakeRequest = (pushWake: Uint8Array): WakeRequest => {
  let value: unknown
  try {
    value = JSON.parse(Buffer.from(pushWake.buffer, pushWake.byteOffset, pushWake.byteLength).toString("utf8"))
  } catch {
    return refused("malformed")
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return refused("malformed")
  const { platform, token } = value as Record<string, unknown>
  if (typeof platform !== "string" || typeof token !== "string") return refused("malformed")
  if (platform !== "fcm") return refused("unsupported platform")
  if (token === "") return refused("empty token")
  if (Buffer.byteLength(token, "utf8") > MAX_TOKEN_BYTES) return refused("token too long")
  return { _tag: "Valid", token }
}

/** The first 8 lowercase hex characters of SHA-256(device token): the only trace of a token in a log. */
export const tokenFingerprint = (token: string): string =>
  createHash("sha256").update(token, "utf8").digest("hex").slice(0, 8)
