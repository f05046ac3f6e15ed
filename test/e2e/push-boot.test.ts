/**
 * Push settings at boot (PUSH.md §1), as an operator meets them: a bad key, file, endpoint or
 * limit exits 2 with one stderr line naming the variable or flag — and a bad key is refused with
 * the same fixed line whatever it held, so no part of a secret is ever echoed.
 */
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { makeTestKey, serviceAccountJson } from "../support/PushKeys.ts"
import { freePort, runCli } from "../support/RelayProcess.ts"

const SECRET = "SECRETISH-b7e2"
const VARIABLE = "PYRYCODE_RELAY_FCM_CREDENTIALS"
const key = makeTestKey()
let listen: Array<string>
let dir: string

beforeAll(async () => {
  listen = ["--listen", `127.0.0.1:${await freePort()}`, "--metrics-listen", `127.0.0.1:${await freePort()}`]
  dir = mkdtempSync(Path.join(tmpdir(), "push-boot-"))
})

/** Exit 2, nothing on stdout, exactly one stderr line; returns it. */
const refusal = (result: { code: number | null; stdout: string; stderr: string }): string => {
  expect(result.code, result.stderr).toBe(2)
  expect(result.stdout).toBe("")
  const lines = result.stderr.split("\n").filter((l) => l.length > 0)
  expect(lines, result.stderr).toHaveLength(1)
  expect(result.stderr).not.toContain("relay started")
  return lines[0]!
}

const file = (name: string, content: string) => {
  const path = Path.join(dir, name)
  writeFileSync(path, content, { mode: 0o600 })
  return path
}

// Each case is a process start (seconds on a busy machine): the full matrix of values runs
// in-process in test/config-cli.test.ts; these check what the operator sees on the terminal.
describe("push settings refused at boot", () => {
  it("a bad key in the variable: one fixed line naming the variable, the same whatever the value", async () => {
    const values = ["", serviceAccountJson(key, { private_key: `${SECRET}-----BEGIN PRIVATE KEY-----` })]
    const lines = await Promise.all(values.map(async (value) => refusal(await runCli(listen, { [VARIABLE]: value }))))
    for (const line of lines) {
      expect(line).toBe(`pyrycode-relay: ${VARIABLE}: not a service-account JSON key (value withheld)`)
      expect(line).not.toContain(SECRET)
    }
  })

  it("a bad or unreadable --fcm-credentials-file names the flag, never the content", async () => {
    const bad = file("bad.json", serviceAccountJson(key, { client_email: "", private_key_id: SECRET }))
    const [badLine, missingLine] = await Promise.all([
      runCli([...listen, "--fcm-credentials-file", bad]).then(refusal),
      runCli([...listen, "--fcm-credentials-file", Path.join(dir, "missing.json")]).then(refusal)
    ])
    expect(badLine).toBe("pyrycode-relay: --fcm-credentials-file: not a service-account JSON key (value withheld)")
    expect(missingLine).toBe("pyrycode-relay: --fcm-credentials-file: cannot be read (ENOENT)")
  })

  it("a plain-http --fcm-endpoint off loopback", async () => {
    expect(refusal(await runCli([...listen, "--fcm-endpoint", "http://fcm.googleapis.com"]))).toContain("--fcm-endpoint:")
  })
})
