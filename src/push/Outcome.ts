/**
 * What a reply means (PUSH.md §3.4). Pure: a status and at most 4 KiB of body in, an outcome out.
 *
 * Error text is built only from the HTTP status and values shaped like an enum, so nothing a
 * server wrote in free text (FCM's `error.message`, a token endpoint's `error_description`) and
 * nothing the relay sent can ever reach a log: whatever a reply says, its description is one of
 * a small, fixed-shape set.
 */

/** One outcome per admitted wake; the metric's label values besides `dropped`. */
export type SendOutcome = "sent" | "unregistered" | "token_fetch_failed" | "send_failed"

export type SendResult =
  | { readonly outcome: "sent"; readonly messageId: string | undefined }
  | { readonly outcome: Exclude<SendOutcome, "sent">; readonly error: string }

/** Shaped like an enum: FCM's `error.status` and `errorCode` values are, and nothing else gets through. */
const ENUM = /^[A-Z0-9_]{1,64}$/
/** FCM's message name, e.g. `projects/p/messages/0:1700000000000000%abc`. */
const MESSAGE_ID = /^[A-Za-z0-9/:%_-]{1,256}$/
const FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** The body as JSON, or undefined (not JSON, cut at 4 KiB, not UTF-8). */
const parseJson = (body: Uint8Array): unknown => {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body))
  } catch {
    return undefined
  }
}

const enumOrUndefined = (u: unknown): string | undefined => typeof u === "string" && ENUM.test(u) ? u : undefined

export const isSuccess = (status: number): boolean => status >= 200 && status < 300

/** FCM's reply to `messages:send`. */
export const classifyFcmReply = (status: number, body: Uint8Array): SendResult => {
  const json = parseJson(body)
  if (isSuccess(status)) {
    const name = isRecord(json) ? json["name"] : undefined
    return { outcome: "sent", messageId: typeof name === "string" && MESSAGE_ID.test(name) ? name : undefined }
  }
  const error = isRecord(json) && isRecord(json["error"]) ? json["error"] : undefined
  const errorStatus = enumOrUndefined(error?.["status"])
  const details = error?.["details"]
  const fcmError = Array.isArray(details)
    ? details.find((d): d is Record<string, unknown> => isRecord(d) && d["@type"] === FCM_ERROR_TYPE)
    : undefined
  const errorCode = enumOrUndefined(fcmError?.["errorCode"])
  let text = `HTTP ${status}`
  if (errorStatus !== undefined) text += ` status=${errorStatus}`
  if (errorCode !== undefined) text += ` errorCode=${errorCode}`
  return { outcome: errorCode === "UNREGISTERED" ? "unregistered" : "send_failed", error: text }
}

/** An access token as the token endpoint granted it. */
export interface TokenGrant {
  readonly accessToken: string
  /** Seconds; 0 when the reply did not say (the token is then used once and not cached). */
  readonly expiresIn: number
}

/** It goes into an `Authorization` header: visible ASCII only, so it can never split a header. */
const ACCESS_TOKEN = /^[\x21-\x7e]{1,4096}$/

/** The token endpoint's reply; a failure is described by its status only (never its body). */
export const readTokenReply = (status: number, body: Uint8Array): TokenGrant | string => {
  if (!isSuccess(status)) return `token endpoint HTTP ${status}`
  const json = parseJson(body)
  const accessToken = isRecord(json) ? json["access_token"] : undefined
  if (typeof accessToken !== "string" || !ACCESS_TOKEN.test(accessToken)) {
    return `token endpoint HTTP ${status}, reply unreadable`
  }
  const expiresIn = isRecord(json) ? json["expires_in"] : undefined
  return {
    accessToken,
    expiresIn: typeof expiresIn === "number" && Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn : 0
  }
}

