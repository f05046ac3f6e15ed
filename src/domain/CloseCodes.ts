/** WebSocket close codes and reasons the relay sends (SPEC §5). Reasons are exact. */

export interface CloseCode {
  readonly code: number
  readonly reason: string
}

const close = (code: number, reason = ""): CloseCode => ({ code, reason })

export const Normal = close(1000)
export const ShuttingDown = close(1001, "shutting down")
export const HeartbeatTimeout = close(1011, "heartbeat timeout")
export const PhoneBacklogFull = close(1011, "phone backlog full")
export const PhoneWriteFailed = close(1011, "phone write failed")
/** Ours: a phone frame the binary's bounded write buffer could not accept (SPEC §4.4). */
export const BinaryBacklogFull = close(1011, "binary backlog full")
/** Ours: a defect (a bug) ended the session; the relay stays up (docs/decisions.md). */
export const InternalError = close(1011, "internal error")
/** Ours, cluster mode: Redis did not answer the claim or registration (RFC 6455 1013, try again later). */
export const RegistryUnavailable = close(1013, "registry unavailable")
export const NoServer = close(4404, "no server with that id")
export const Reclaimed = close(4404, "binary reclaimed server-id")
export const AlreadyClaimed = close(4409, "server-id already claimed")
export const PhonesAtCap = close(4429, "too many phones for server-id")

/** The close code a phone "sent" when it sent none: TCP drop, error, relay-side teardown (§2.4). */
export const NOTICE_WITHOUT_CODE = 1001

/**
 * Whether `code` may appear in a close frame on the wire (RFC 6455 §7.4): 1000–1003, 1007–1014,
 * 3000–4999. Everything else in a directive is replaced by 1011 (SPEC §2.3).
 */
export const isWireCode = (code: number): boolean =>
  (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999)

export const toWireCode = (code: number): number => (isWireCode(code) ? code : 1011)
