/**
 * The PROXY v2 parser byte by byte (EDGE.md §3): every accepted and refused form, fed whole and
 * one byte at a time (a header split across TCP segments must give the same answer, and garbage
 * must be refused at its first wrong byte, not after 16).
 */
import { describe, expect, it } from "vitest"
import { MAX_HEADER_BYTES, parseProxyHeader, type ProxyParse } from "../../src/edge/ProxyHeader.ts"
import { proxyV2, SIG, tlv } from "../support/ProxyV2.ts"

/** Feeds `bytes` one byte more at a time; returns the first non-Incomplete answer and where. */
const feed = (bytes: Buffer): { result: ProxyParse; at: number } => {
  for (let n = 0; n <= bytes.length; n++) {
    const result = parseProxyHeader(bytes.subarray(0, n))
    if (result._tag !== "Incomplete") return { result, at: n }
  }
  return { result: { _tag: "Incomplete" }, at: bytes.length }
}

describe("accepted headers", () => {
  it("PROXY TCP over IPv4: the source address and port, and the header's length", () => {
    const header = proxyV2({ source: "203.0.113.7", sourcePort: 51_234 })
    expect(header.length).toBe(28)
    expect(parseProxyHeader(header)).toEqual({
      _tag: "Accepted",
      source: "203.0.113.7",
      sourcePort: 51_234,
      headerLength: 28
    })
  })

  it("PROXY TCP over IPv6, canonical text", () => {
    const header = proxyV2({ family: 2, source: "2001:db8:0:0:0:0:0:1", sourcePort: 1 })
    expect(parseProxyHeader(header)).toMatchObject({ _tag: "Accepted", source: "2001:db8::1", headerLength: 52 })
    expect(parseProxyHeader(proxyV2({ family: 2, source: "2001:db8:1:0:0:1:0:1" }))).toMatchObject({
      source: "2001:db8:1::1:0:1"
    })
    expect(parseProxyHeader(proxyV2({ family: 2, source: "fe80:0:0:1:0:0:0:abcd" }))).toMatchObject({
      source: "fe80:0:0:1::abcd"
    })
    expect(parseProxyHeader(proxyV2({ family: 2, source: "0:0:0:0:0:0:0:1" }))).toMatchObject({ source: "::1" })
  })

  it("an IPv4-mapped IPv6 source is written dotted (one client, one rate-limit bucket)", () => {
    expect(parseProxyHeader(proxyV2({ family: 2, source: "::ffff:c000:0201" }))).toMatchObject({ source: "192.0.2.1" })
  })

  it("TLVs are skipped, bounded by the length field", () => {
    const tlvs = Buffer.concat([tlv(0x01, Buffer.from("h2")), tlv(0x04, Buffer.alloc(0)), tlv(0xe0, Buffer.alloc(300, 7))])
    const header = proxyV2({ tlvs })
    expect(parseProxyHeader(header)).toMatchObject({ _tag: "Accepted", headerLength: 16 + 12 + tlvs.length })
  })

  it("bytes after the header are not part of it", () => {
    const header = proxyV2()
    const withRequest = Buffer.concat([header, Buffer.from("GET /healthz HTTP/1.1\r\n\r\n")])
    expect(parseProxyHeader(withRequest)).toMatchObject({ _tag: "Accepted", headerLength: header.length })
  })

  it("a header arriving one byte at a time is accepted at its last byte, not before", () => {
    const header = proxyV2({ family: 2, tlvs: tlv(0x02, Buffer.from("relay.example.com")) })
    const { result, at } = feed(header)
    expect(result._tag).toBe("Accepted")
    expect(at).toBe(header.length)
  })

  it("exactly 4096 bytes is accepted; 4097 is oversized", () => {
    const fits = proxyV2({ tlvs: tlv(0xe0, Buffer.alloc(MAX_HEADER_BYTES - 16 - 12 - 3)) })
    expect(fits.length).toBe(MAX_HEADER_BYTES)
    expect(parseProxyHeader(fits)._tag).toBe("Accepted")
    const over = proxyV2({ tlvs: tlv(0xe0, Buffer.alloc(MAX_HEADER_BYTES - 16 - 12 - 2)) })
    expect(parseProxyHeader(over)).toEqual({ _tag: "Refused", reason: "oversized" })
  })
})

describe("refused headers, at the first byte that decides", () => {
  const cases: ReadonlyArray<{ name: string; bytes: Buffer; reason: string; at: number }> = [
    { name: "version 1 text header", bytes: Buffer.from("PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n"), reason: "v1", at: 1 },
    { name: "no header: plain HTTP", bytes: Buffer.from("GET / HTTP/1.1\r\n\r\n"), reason: "bad_signature", at: 1 },
    { name: "no header: a TLS ClientHello", bytes: Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]), reason: "bad_signature", at: 1 },
    {
      name: "a signature wrong in its last byte",
      bytes: Buffer.concat([SIG.subarray(0, 11), Buffer.from([0x0b]), proxyV2().subarray(12)]),
      reason: "bad_signature",
      at: 12
    },
    { name: "version 1 in the v2 framing", bytes: proxyV2({ version: 1 }), reason: "bad_version", at: 13 },
    { name: "version 3", bytes: proxyV2({ version: 3 }), reason: "bad_version", at: 13 },
    { name: "LOCAL command", bytes: proxyV2({ command: 0, family: 0, transport: 0 }), reason: "local", at: 13 },
    { name: "LOCAL command with addresses", bytes: proxyV2({ command: 0 }), reason: "local", at: 13 },
    { name: "unknown command 2", bytes: proxyV2({ command: 2 }), reason: "bad_command", at: 13 },
    { name: "UNSPEC family", bytes: proxyV2({ family: 0, transport: 0 }), reason: "unspec", at: 14 },
    { name: "UNIX family", bytes: proxyV2({ family: 3, addresses: Buffer.alloc(216) }), reason: "unix", at: 14 },
    { name: "unknown family 4", bytes: proxyV2({ family: 4, addresses: Buffer.alloc(12) }), reason: "bad_family", at: 14 },
    { name: "TCP4 datagram (UDP)", bytes: proxyV2({ transport: 2 }), reason: "datagram", at: 14 },
    { name: "TCP6 datagram (UDP)", bytes: proxyV2({ family: 2, transport: 2 }), reason: "datagram", at: 14 },
    { name: "INET with UNSPEC transport", bytes: proxyV2({ transport: 0 }), reason: "unspec", at: 14 },
    { name: "length field over 4 KiB", bytes: proxyV2({ length: 0xffff }), reason: "oversized", at: 16 },
    { name: "IPv4 addresses shorter than 12 bytes", bytes: proxyV2({ length: 11 }), reason: "short_addresses", at: 16 },
    { name: "IPv6 addresses shorter than 36 bytes", bytes: proxyV2({ family: 2, length: 12 }), reason: "short_addresses", at: 16 }
  ]
  for (const c of cases) {
    it(c.name, () => {
      expect(parseProxyHeader(c.bytes)).toEqual({ _tag: "Refused", reason: c.reason })
      expect(feed(c.bytes)).toEqual({ result: { _tag: "Refused", reason: c.reason }, at: c.at })
    })
  }
})

describe("incomplete input", () => {
  it("nothing yet, or any proper prefix of a good header, asks for more", () => {
    const header = proxyV2()
    for (let n = 0; n < header.length; n++) {
      expect(parseProxyHeader(header.subarray(0, n))).toEqual({ _tag: "Incomplete" })
    }
  })

  it("a header whose length field promises more than arrived stays incomplete (truncated is the caller's call)", () => {
    const header = proxyV2({ tlvs: tlv(0x01, Buffer.from("http/1.1")) })
    expect(parseProxyHeader(header.subarray(0, header.length - 1))).toEqual({ _tag: "Incomplete" })
  })
})
