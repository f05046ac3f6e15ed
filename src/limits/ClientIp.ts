/**
 * The source IP a request is rate limited and capped by (SPEC §7.1). Pure: the HTTP layer passes
 * in the socket's remote address and the raw `X-Forwarded-For` value.
 *
 * Without `--trust-x-forwarded-for` the header is ignored entirely (any client can write it).
 * With it, the left-most non-blank entry wins: that is the client as seen by the first proxy.
 * The result is a bucket key and a log annotation, never a metric label.
 */

const MAPPED_V4 = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i

/**
 * `::ffff:1.2.3.4` → `1.2.3.4`: a dual-stack listener reports IPv4 peers in mapped form, and one
 * client must not get two buckets depending on which form it arrived in.
 */
export const normalizeIp = (ip: string): string => {
  const mapped = MAPPED_V4.exec(ip)
  return mapped?.[1] ?? ip
}

/**
 * Left-most non-blank entry of `X-Forwarded-For`. Several header lines are read in order, the
 * way Node joins them into one comma-separated string, so both representations give the same
 * answer: normally the first line's left-most entry.
 */
const leftMostForwarded = (xff: string | ReadonlyArray<string>): string | undefined => {
  const lines = typeof xff === "string" ? [xff] : xff
  for (const line of lines) {
    for (const entry of line.split(",")) {
      const trimmed = entry.trim()
      if (trimmed !== "") return trimmed
    }
  }
  return undefined
}

/**
 * The client's IP, or `undefined` when none can be determined (the caller answers 429 without
 * creating a bucket). With `trustXff`, a request whose header is missing or blank falls back to
 * the socket's address, which is then the proxy (or a client that bypassed it).
 */
export const clientIp = (
  remoteAddress: string | undefined,
  xff: string | ReadonlyArray<string> | undefined,
  trustXff: boolean
): string | undefined => {
  const forwarded = trustXff && xff !== undefined ? leftMostForwarded(xff) : undefined
  const ip = forwarded ?? remoteAddress?.trim()
  return ip === undefined || ip === "" ? undefined : normalizeIp(ip)
}
