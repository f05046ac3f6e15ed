/**
 * PROXY protocol v2 headers built byte by byte for tests (haproxy.org proxy-protocol.txt §2.2),
 * written here independently of `src/edge/ProxyHeader.ts` so the parser is checked against the
 * document, not against itself.
 */
import * as Net from "node:net"

export const SIG = Buffer.from("0d0a0d0a000d0a515549540a", "hex")

export interface HeaderSpec {
  /** High nibble of byte 13; default 2. */
  readonly version?: number
  /** Low nibble of byte 13: 0 LOCAL, 1 PROXY (default). */
  readonly command?: number
  /** High nibble of byte 14: 0 UNSPEC, 1 INET (default), 2 INET6, 3 UNIX. */
  readonly family?: number
  /** Low nibble of byte 14: 0 UNSPEC, 1 STREAM (default), 2 DGRAM. */
  readonly transport?: number
  readonly source?: string
  readonly destination?: string
  readonly sourcePort?: number
  readonly destinationPort?: number
  /** Extra bytes after the addresses (TLVs). */
  readonly tlvs?: Buffer
  /** Overrides the length field (lying headers). */
  readonly length?: number
  /** Overrides the address block entirely. */
  readonly addresses?: Buffer
}

const ipBytes = (ip: string): Buffer => {
  if (Net.isIPv4(ip)) return Buffer.from(ip.split(".").map(Number))
  // Expand `::` and write eight 16-bit groups.
  const [head = "", tail] = ip.split("::")
  const left = head === "" ? [] : head.split(":")
  const right = tail === undefined || tail === "" ? [] : tail.split(":")
  const groups = [...left, ...Array(8 - left.length - right.length).fill("0"), ...right]
  const out = Buffer.alloc(16)
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2))
  return out
}

export const proxyV2 = (spec: HeaderSpec = {}): Buffer => {
  const family = spec.family ?? 1
  const v6 = family === 2
  const source = spec.source ?? (v6 ? "2001:db8::1" : "203.0.113.7")
  const destination = spec.destination ?? (v6 ? "2001:db8::2" : "198.51.100.1")
  const ports = Buffer.alloc(4)
  ports.writeUInt16BE(spec.sourcePort ?? 51_234, 0)
  ports.writeUInt16BE(spec.destinationPort ?? 443, 2)
  const addresses = spec.addresses ??
    (family === 1 || family === 2 ? Buffer.concat([ipBytes(source), ipBytes(destination), ports]) : Buffer.alloc(0))
  const body = Buffer.concat([addresses, spec.tlvs ?? Buffer.alloc(0)])
  const fixed = Buffer.alloc(4)
  fixed[0] = ((spec.version ?? 2) << 4) | (spec.command ?? 1)
  fixed[1] = (family << 4) | (spec.transport ?? 1)
  fixed.writeUInt16BE(spec.length ?? body.length, 2)
  return Buffer.concat([SIG, fixed, body])
}

/** A TLV: type, 16-bit length, value. */
export const tlv = (type: number, value: Buffer): Buffer => {
  const head = Buffer.alloc(3)
  head[0] = type
  head.writeUInt16BE(value.length, 1)
  return Buffer.concat([head, value])
}
