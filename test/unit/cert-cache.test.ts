/**
 * The certificate cache's rules (EDGE.md §1) on real directories under the OS temp dir, with the
 * relay's uid as an input (so "owned by someone else" needs no root), and the certificate bundle
 * (key + chain in one file) parsed back with the checks serving relies on.
 */
import { execFileSync } from "node:child_process"
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Result from "effect/Result"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { prepareCacheDir, writeCacheFile } from "../../src/edge/CertCache.ts"
import { covers, fromBundle, makeCertificate, toBundle } from "../../src/edge/CertificateBundle.ts"
import { hasOpenssl, issueServerCertificate } from "../support/TestCa.ts"

const uid = process.getuid?.() ?? 0
let base: string
beforeAll(() => {
  base = mkdtempSync(Path.join(Os.tmpdir(), "relay-cache-unit-"))
})
afterAll(() => rmSync(base, { recursive: true, force: true }))

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runSyncExit(effect)
const failure = (exit: Exit.Exit<unknown, { message: string }>): string => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const reason = exit.cause.reasons[0]
  return reason !== undefined && reason._tag === "Fail" ? reason.error.message : "not a failure"
}

describe("prepareCacheDir", () => {
  it("creates a missing directory (and its parents) with mode 0700, whatever the umask", () => {
    const dir = Path.join(base, "new", "nested", "certs")
    const previous = process.umask(0)
    try {
      expect(run(prepareCacheDir(dir, uid))).toEqual(Exit.succeed("created"))
    } finally {
      process.umask(previous)
    }
    expect(statSync(dir).mode & 0o777).toBe(0o700)
  })

  it("leaves a 0700 directory of ours alone", () => {
    const dir = Path.join(base, "ready")
    mkdirSync(dir, { mode: 0o700 })
    expect(run(prepareCacheDir(dir, uid))).toEqual(Exit.succeed("ready"))
  })

  it("tightens group/other bits on a directory of ours to 0700", () => {
    for (const mode of [0o755, 0o750, 0o701, 0o777]) {
      const dir = Path.join(base, `loose-${mode.toString(8)}`)
      mkdirSync(dir)
      chmodSync(dir, mode)
      expect(run(prepareCacheDir(dir, uid))).toEqual(Exit.succeed("tightened"))
      expect(statSync(dir).mode & 0o777).toBe(0o700)
    }
  })

  it("refuses a path that is not a directory", () => {
    const file = Path.join(base, "a-file")
    writeFileSync(file, "x")
    expect(failure(run(prepareCacheDir(file, uid)))).toBe(`certificate cache unusable: ${file}: not a directory`)
  })

  it("refuses a directory owned by another user, and does not touch its mode", () => {
    const dir = Path.join(base, "theirs")
    mkdirSync(dir)
    chmodSync(dir, 0o755)
    expect(failure(run(prepareCacheDir(dir, uid + 1)))).toBe(
      `certificate cache unusable: ${dir}: owned by uid ${uid}, not the relay's uid ${uid + 1}`
    )
    expect(statSync(dir).mode & 0o777).toBe(0o755)
  })
})

describe("writeCacheFile", () => {
  it("writes 0600 (also over an existing, looser file), and leaves no temporary file", () => {
    const dir = Path.join(base, "writes")
    mkdirSync(dir, { mode: 0o700 })
    const path = Path.join(dir, "account.key")
    writeFileSync(path, "old")
    chmodSync(path, 0o644)
    expect(Exit.isSuccess(run(writeCacheFile(path, "new key")))).toBe(true)
    expect(readFileSync(path, "utf8")).toBe("new key")
    expect(statSync(path).mode & 0o777).toBe(0o600)
    expect(readdirSync(dir)).toEqual(["account.key"])
  })

  it("a write that fails at the rename leaves no temporary file, and the files beside it untouched", () => {
    const dir = Path.join(base, "fails")
    mkdirSync(dir, { mode: 0o700 })
    const path = Path.join(dir, "cert.pem")
    writeFileSync(path, "old certificate")
    // A directory where the file should be renamed to: the rename fails after the write.
    const target = Path.join(dir, "occupied")
    mkdirSync(Path.join(target, "child"), { recursive: true })
    expect(Exit.isFailure(run(writeCacheFile(target, "new")))).toBe(true)
    expect(readdirSync(dir).sort()).toEqual(["cert.pem", "occupied"])
    expect(readFileSync(path, "utf8")).toBe("old certificate")
  })
})

describe.skipIf(!hasOpenssl)("certificate bundle", () => {
  let certPem: string
  let keyPem: string
  let otherKeyPem: string
  let caPem: string
  beforeAll(() => {
    const dir = Path.join(base, "bundle")
    mkdirSync(dir)
    const issued = issueServerCertificate(dir, ["relay.example.com", "b.example.com"])
    certPem = readFileSync(issued.certFile, "utf8")
    keyPem = readFileSync(issued.keyFile, "utf8")
    caPem = readFileSync(issued.caFile, "utf8")
    otherKeyPem = execFileSync("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]).toString()
  })

  it("a key and a chain round-trip through one file, leaf first, with validity, serial and names", () => {
    const made = makeCertificate(keyPem, `${certPem}${caPem}`)
    if (Result.isFailure(made)) throw new Error(made.failure)
    const back = fromBundle(toBundle(made.success))
    if (Result.isFailure(back)) throw new Error(back.failure)
    expect(back.success.serial).toBe(made.success.serial)
    expect(back.success.names).toEqual(["relay.example.com", "b.example.com"])
    expect(back.success.notAfter).toBeGreaterThan(back.success.notBefore)
    expect(back.success.chainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2)
    expect(back.success.chainPem.indexOf(certPem.trim())).toBe(0)
    expect(covers(back.success, ["relay.example.com"])).toBe(true)
    expect(covers(back.success, ["relay.example.com", "b.example.com"])).toBe(true)
    expect(covers(back.success, ["relay.example.com", "c.example.com"])).toBe(false)
  })

  it("refuses a key that does not match, no certificate, or no key", () => {
    expect(makeCertificate(otherKeyPem, certPem)).toEqual(Result.fail("the key does not match the certificate"))
    expect(makeCertificate(keyPem, "")).toEqual(Result.fail("no certificate"))
    expect(fromBundle(certPem)).toEqual(Result.fail("no private key"))
    expect(Result.isFailure(fromBundle("garbage"))).toBe(true)
  })
})
