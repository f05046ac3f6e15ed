/**
 * The PROXY protocol version 2 header (EDGE.md §3; haproxy.org proxy-protocol.txt §2.2), parsed
 * from the first bytes of a connection. Pure: the listener feeds it what has arrived so far and it
 * answers "need more", "refused (why)" or "accepted (source address, header length)".
 *
 * Layout: 12-byte signature · version/command byte · family/transport byte · 16-bit big-endian
 * length of what follows · addresses (12 bytes for TCP over IPv4, 36 for IPv6) · TLVs (skipped).
 * Only `PROXY` with an `AF_INET`/`AF_INET6` stream source is accepted; everything else is refused,
 * as early as the bytes allow, so garbage never waits for the deadline.
 */

export const SIGNATURE: Uint8Array = Uint8Array.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])

/** Signature, version/command, family/transport and the length field. */
export const FIXED_BYTES = 16

/** Longest header accepted, TLVs included; a longer one is refused as soon as its length is read. */
export const MAX_HEADER_BYTES = 4096

const INET_ADDRESS_BYTES = 12
const INET6_ADDRESS_BYTES = 36

/** Why a header was refused. Only the log sees these; the metric has one reason, `proxy_header`. */
export type ProxyRefusal =
  | "v1"
  | "bad_signature"
  | "bad_version"
  | "local"
  | "bad_command"
  | "unspec"
  | "unix"
  | "datagram"
  | "bad_family"
  | "short_addresses"
  | "oversized"

export type ProxyParse =
  | { readonly _tag: "Incomplete" }
  | { readonly _tag: "Refused"; readonly reason: ProxyRefusal }
  | {
    readonly _tag: "Accepted"
    /** The client's address as text: dotted IPv4, or canonical IPv6 (IPv4-mapped shown dotted). */
    readonly source: string
    readonly sourcePort: number
    /** Bytes the header occupies; everything after it belongs to TLS or HTTP. */
    readonly headerLength: number
  }

const incomplete: ProxyParse = { _tag: "Incomplete" }
const refused = (reason: ProxyRefusal): ProxyParse => ({ _tag: "Refused", reason })

const V1_PREFIX = Uint8Array.from(Buffer.from("PROXY ", "latin1"))

/** Whether `bytes` is a (possibly partial) prefix of `of`. */
const isPrefixOf = (bytes: Uint8Array, of: Uint8Array): boolean => {
  const n = Math.min(bytes.length, of.length)
  for (let i = 0; i < n; i++) if (bytes[i] !== of[i]) return false
  return true
}

const ipv4 = (b: Uint8Array, at: number): string => `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`

/** RFC 5952 text: lower-case hex, no leading zeros, the longest run (≥ 2) of zero groups as `::`. */
const ipv6 = (b: Uint8Array, at: number): string => {
  const groups: Array<number> = []
  for (let i = 0; i < 8; i++) groups.push((b[at + 2 * i]! << 8) | b[at + 2 * i + 1]!)
  // ::ffff:a.b.c.d is an IPv4 client on a dual-stack balancer: one client, one spelling.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) return ipv4(b, at + 12)
  let bestAt = -1
  let bestLen = 1
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) {
      bestAt = i
      bestLen = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (bestAt === -1) return hex.join(":")
  return `${hex.slice(0, bestAt).join(":")}::${hex.slice(bestAt + bestLen).join(":")}`
}

/**
 * Parses the start of a connection. `Incomplete` means every byte so far is consistent with an
 * acceptable header and more are needed; the caller decides what a missing rest means (the peer
 * closed: truncated; the deadline passed: late).
 */
export const parseProxyHeader = (bytes: Uint8Array): ProxyParse => {
  if (!isPrefixOf(bytes, SIGNATURE)) {
    return refused(bytes.length > 0 && isPrefixOf(bytes, V1_PREFIX) ? "v1" : "bad_signature")
  }
  if (bytes.length <= SIGNATURE.length) return incomplete

  const versionCommand = bytes[12]!
  if (versionCommand >> 4 !== 2) return refused("bad_version")
  const command = versionCommand & 0x0f
  if (command === 0x0) return refused("local")
  if (command !== 0x1) return refused("bad_command")
  if (bytes.length < 14) return incomplete

  const familyTransport = bytes[13]!
  const family = familyTransport >> 4
  const transport = familyTransport & 0x0f
  if (family === 0x0) return refused("unspec")
  if (family === 0x3) return refused("unix")
  if (family !== 0x1 && family !== 0x2) return refused("bad_family")
  if (transport === 0x2) return refused("datagram")
  if (transport !== 0x1) return refused("unspec")
  if (bytes.length < FIXED_BYTES) return incomplete

  const length = (bytes[14]! << 8) | bytes[15]!
  const total = FIXED_BYTES + length
  if (total > MAX_HEADER_BYTES) return refused("oversized")
  const addressBytes = family === 0x1 ? INET_ADDRESS_BYTES : INET6_ADDRESS_BYTES
  if (length < addressBytes) return refused("short_addresses")
  if (bytes.length < total) return incomplete

  const at = FIXED_BYTES
  // Source address, destination address, source port, destination port.
  const source = family === 0x1 ? ipv4(bytes, at) : ipv6(bytes, at)
  const portAt = at + (family === 0x1 ? 8 : 32)
  const sourcePort = (bytes[portAt]! << 8) | bytes[portAt + 1]!
  return { _tag: "Accepted", source, sourcePort, headerLength: total }
}
