/**
 * `CapEff` parsing and judging (EDGE.md §4) on fixed `/proc/<pid>/status` texts: the kernel's
 * spelling (tab, 16 hex digits), every capability named, only CAP_NET_BIND_SERVICE allowed.
 */
import * as Result from "effect/Result"
import { describe, expect, it } from "vitest"
import { capabilityName, capabilityRefusal, parseCapEff, strayCapabilities } from "../../src/edge/Capabilities.ts"

/** A status file as Linux 6.x writes it for a root shell with the full set. */
const ROOT_STATUS = [
  "Name:\tbash",
  "Umask:\t0022",
  "State:\tS (sleeping)",
  "Uid:\t0\t0\t0\t0",
  "CapInh:\t0000000000000000",
  "CapPrm:\t000001ffffffffff",
  "CapEff:\t000001ffffffffff",
  "CapBnd:\t000001ffffffffff",
  "CapAmb:\t0000000000000000",
  "NoNewPrivs:\t0",
  ""
].join("\n")

const withCapEff = (hex: string) => ROOT_STATUS.replace("CapEff:\t000001ffffffffff", `CapEff:\t${hex}`)

describe("parseCapEff", () => {
  it("reads the CapEff line, not CapPrm or CapBnd", () => {
    expect(parseCapEff(withCapEff("0000000000000400"))).toEqual(Result.succeed(0x400n))
    expect(parseCapEff(ROOT_STATUS)).toEqual(Result.succeed(0x1ffffffffffn))
  })

  it("a missing or malformed line is a failure, not an empty set", () => {
    expect(Result.isFailure(parseCapEff("Name:\tnode\nCapPrm:\t0000000000000000\n"))).toBe(true)
    expect(Result.isFailure(parseCapEff(withCapEff("zz00000000000000")))).toBe(true)
    expect(Result.isFailure(parseCapEff(withCapEff("00000000000000000")))).toBe(true)
    expect(Result.isFailure(parseCapEff(""))).toBe(true)
  })
})

describe("strayCapabilities", () => {
  it("CAP_NET_BIND_SERVICE alone, or nothing, is clean", () => {
    expect(strayCapabilities(0n)).toEqual([])
    expect(strayCapabilities(1n << 10n)).toEqual([])
  })

  it("names every other capability, lowest number first", () => {
    expect(strayCapabilities((1n << 10n) | (1n << 13n) | (1n << 21n))).toEqual(["CAP_NET_RAW", "CAP_SYS_ADMIN"])
    expect(strayCapabilities(1n)).toEqual(["CAP_CHOWN"])
    expect(strayCapabilities(1n << 40n)).toEqual(["CAP_CHECKPOINT_RESTORE"])
  })

  it("a root shell's full set: all 40 others, by name", () => {
    const names = strayCapabilities(0x1ffffffffffn)
    expect(names).toHaveLength(40)
    expect(names).not.toContain("CAP_NET_BIND_SERVICE")
    expect(names[0]).toBe("CAP_CHOWN")
    expect(names.at(-1)).toBe("CAP_CHECKPOINT_RESTORE")
  })

  it("capabilities newer than the table get a number rather than disappearing", () => {
    expect(capabilityName(41)).toBe("cap_41")
    expect(strayCapabilities(1n << 63n)).toEqual(["cap_63"])
  })
})

describe("capabilityRefusal", () => {
  it("allows CAP_NET_BIND_SERVICE only", () => {
    expect(capabilityRefusal(Result.succeed(withCapEff("0000000000000400")))).toBeUndefined()
    expect(capabilityRefusal(Result.succeed(withCapEff("0000000000000000")))).toBeUndefined()
  })

  it("refuses and names the rest", () => {
    expect(capabilityRefusal(Result.succeed(withCapEff("0000000000003400")))).toBe(
      "the effective capability set holds CAP_NET_ADMIN, CAP_NET_RAW (only CAP_NET_BIND_SERVICE is allowed)"
    )
  })

  it("an unreadable file or a missing line is a refusal", () => {
    expect(capabilityRefusal(Result.fail("EACCES"))).toContain("(EACCES)")
    expect(capabilityRefusal(Result.succeed("Name:\tnode\n"))).toContain("no CapEff line")
  })
})
