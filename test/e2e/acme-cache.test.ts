/**
 * The certificate cache directory at boot (EDGE.md §1), against the relay process: created 0700
 * when missing, tightened to 0700 with an info line when ours and open, exit 1 when it is not a
 * directory or belongs to someone else, exit 1 when `--acme-ca-file` cannot be read. No CA is
 * needed: the directory URL points at a closed port, and the relay stays up regardless.
 */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, runCli, startRelay } from "../support/RelayProcess.ts"

const isRoot = process.getuid?.() === 0
let base: string
let closedCa: string
beforeAll(async () => {
  base = mkdtempSync(Path.join(Os.tmpdir(), "relay-acme-cache-"))
  closedCa = `https://127.0.0.1:${await freePort()}/dir`
})
afterAll(() => rmSync(base, { recursive: true, force: true }))

/** ACME flags; `runCli` also needs the listeners that `startRelay` adds itself. */
const flags = async (cache: string, forRunCli = true) => [
  "--domain", "relay.pyrycode.test",
  "--acme-directory", closedCa,
  "--cert-cache", cache,
  "--http-listen", `127.0.0.1:${await freePort()}`,
  ...(forRunCli ? ["--https-listen", `127.0.0.1:${await freePort()}`, "--metrics-listen", ""] : [])
]

/** Exit 1 with one last line naming the problem, before anything was bound. */
const expectUnusable = (result: { code: number | null; stderr: string }, text: string) => {
  expect(result.code, result.stderr).toBe(1)
  const last = result.stderr.trimEnd().split("\n").at(-1)!
  expect(last).toBe(`pyrycode-relay: ${text}`)
  expect(result.stderr).not.toContain("relay started")
}

describe("the certificate cache directory at boot", () => {
  it("a missing directory is created 0700 (parents too) and the relay starts", async () => {
    const cache = Path.join(base, "missing", "certs")
    const relay = await startRelay(await flags(cache, false), { listenFlag: "--https-listen", tls: true })
    try {
      expect(statSync(cache).mode & 0o777).toBe(0o700)
      expect(statSync(Path.join(cache, "account.key")).mode & 0o777).toBe(0o600)
    } finally {
      expect(await relay.stop()).toBe(0)
    }
  })

  it("a directory of ours with group/other bits is tightened to 0700, logged at info", async () => {
    const cache = Path.join(base, "loose")
    mkdirSync(cache)
    chmodSync(cache, 0o755)
    const relay = await startRelay(await flags(cache, false), { listenFlag: "--https-listen", tls: true })
    try {
      expect(statSync(cache).mode & 0o777).toBe(0o700)
      const line = JSON.parse(relay.logs.find((l) => l.includes(`"certificate cache tightened"`))!) as Record<string, unknown>
      expect(line).toMatchObject({ level: "info", cert_cache: cache })
    } finally {
      expect(await relay.stop()).toBe(0)
    }
  })

  it("a path that is not a directory: exit 1, certificate cache unusable", async () => {
    const file = Path.join(base, "a-file")
    writeFileSync(file, "not a directory")
    expectUnusable(await runCli(await flags(file)), `certificate cache unusable: ${file}: not a directory`)
  })

  it("a directory owned by someone else: exit 1, and its mode is left alone", async () => {
    let cache: string
    let owner: number
    if (isRoot) {
      cache = Path.join(base, "theirs")
      mkdirSync(cache)
      chmodSync(cache, 0o755)
      chownSync(cache, 65534, 65534)
      owner = 65534
    } else {
      // A normal user cannot give a directory away; "/" belongs to root everywhere.
      cache = "/"
      owner = 0
    }
    const uid = process.getuid?.() ?? 0
    expectUnusable(await runCli(await flags(cache)), `certificate cache unusable: ${cache}: owned by uid ${owner}, not the relay's uid ${uid}`)
    if (isRoot) expect(statSync(cache).mode & 0o777).toBe(0o755)
  })

  it("an unreadable --acme-ca-file: exit 1 naming it", async () => {
    const cache = Path.join(base, "ca-file")
    const missing = Path.join(base, "no-such-ca.pem")
    expectUnusable(await runCli([...(await flags(cache)), "--acme-ca-file", missing]), `cannot read --acme-ca-file ${missing}: ENOENT`)
  })
})
