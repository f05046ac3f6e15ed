/**
 * The Host check's decision (EDGE.md §2), on Host header values as clients send them.
 */
import { describe, expect, it } from "vitest"
import { hostAllowed, hostName } from "../../src/edge/HostCheck.ts"

const domains = new Set(["relay.example.com", "wss.example.org"])

describe("hostName", () => {
  it("strips the port, lower-cases, drops a trailing dot", () => {
    expect(hostName("relay.example.com")).toBe("relay.example.com")
    expect(hostName("Relay.Example.COM:443")).toBe("relay.example.com")
    expect(hostName("relay.example.com.:8443")).toBe("relay.example.com")
    expect(hostName("[2001:db8::1]:443")).toBe("[2001:db8::1]")
    expect(hostName("[::1]")).toBe("[::1]")
  })

  it("missing or empty is undefined", () => {
    expect(hostName(undefined)).toBeUndefined()
    expect(hostName("")).toBeUndefined()
    expect(hostName("   ")).toBeUndefined()
  })
})

describe("hostAllowed", () => {
  it("each configured name, with or without a port, in any case", () => {
    expect(hostAllowed("relay.example.com", domains)).toBe(true)
    expect(hostAllowed("relay.example.com:443", domains)).toBe(true)
    expect(hostAllowed("RELAY.example.com:8443", domains)).toBe(true)
    expect(hostAllowed("wss.example.org", domains)).toBe(true)
    expect(hostAllowed("relay.example.com.", domains)).toBe(true)
  })

  it("refuses everything else", () => {
    for (const host of [
      undefined,
      "",
      "relay.example.com.evil.com",
      "evil.com",
      "example.com",
      "sub.relay.example.com",
      "xrelay.example.com",
      "relay.example.com..",
      "203.0.113.5",
      "203.0.113.5:443",
      "[2001:db8::1]:443",
      "localhost",
      "relay.example.com@evil.com"
    ]) {
      expect(hostAllowed(host, domains), String(host)).toBe(false)
    }
  })
})
