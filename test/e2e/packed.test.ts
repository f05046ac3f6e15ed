/**
 * The package as a user gets it (issue 17): `npm pack` (which builds it through `prepare`), a
 * fresh project that depends on the tarball, `npm install`, then the examples of
 * docs/embedding.md — copied out of the installed package — run on the machine's Node 20 (no
 * type stripping: plain JavaScript against `dist/`), and checked over HTTP and WebSocket.
 *
 * It packs a copy of the sources, never the checkout itself: a build here would rewrite
 * `dist/service/relay.mjs` under the end-to-end tests running at the same time. It needs `npm`
 * and the npm registry (the project installs effect & co.); without either it skips, loudly.
 */
import { execFile } from "node:child_process"
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { checkAdminCounts, checkAppWithRelay, EXAMPLES, runExample } from "../support/Examples.ts"

const run = promisify(execFile)
const ROOT = Path.resolve(import.meta.dirname, "../..")
/** The machine's Node (20 here and in CI), not the pinned Node 24 the test runner uses. */
const SYSTEM_NODE = process.env["PYRYCODE_SYSTEM_NODE"] ?? "/usr/bin/node"
/** Why a failed `npm install` means "no registry here" rather than a broken package. */
const NETWORK = /ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|network/i

/** What `npm test` puts in the environment that points at this checkout (the rest, e.g. a registry, stays). */
const CHECKOUT_NPM = /^npm_(package_|lifecycle_|config_local_prefix$)/

/**
 * The environment of a user's shell: nothing that points npm at this checkout (its local prefix
 * would make it pack or install *here*), and no `node_modules/.bin` of it on the PATH.
 */
const userEnv = (): NodeJS.ProcessEnv => {
  const bin = Path.join(ROOT, "node_modules", ".bin")
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) if (!CHECKOUT_NPM.test(key)) env[key] = value
  env["PATH"] = (process.env["PATH"] ?? "").split(Path.delimiter).filter((dir) => !dir.startsWith(bin)).join(Path.delimiter)
  return env
}

let work = ""
let project = ""
let skipped: string | undefined

const skipLoudly = (reason: string) => {
  skipped = reason
  process.stderr.write(`\n*** test/e2e/packed.test.ts SKIPPED: ${reason} ***\n\n`)
}

beforeAll(async () => {
  if (!existsSync(SYSTEM_NODE)) return skipLoudly(`no system Node at ${SYSTEM_NODE}`)
  try {
    await run("npm", ["--version"], { env: userEnv() })
  } catch {
    return skipLoudly("npm is not on the PATH")
  }
  work = mkdtempSync(Path.join(tmpdir(), "relay-packed-"))

  // A copy of what the package is built from, with this checkout's dev dependencies.
  const source = Path.join(work, "source")
  for (const entry of ["package.json", "tsconfig.json", "tsconfig.build.json", "README.md", "src", "docs"]) {
    cpSync(Path.join(ROOT, entry), Path.join(source, entry), { recursive: true })
  }
  symlinkSync(Path.join(ROOT, "node_modules"), Path.join(source, "node_modules"), "dir")
  const packed = await run("npm", ["pack", "--json", "--pack-destination", work], {
    cwd: source,
    env: userEnv(),
    maxBuffer: 16 * 1024 * 1024
  })
  const [{ filename }] = JSON.parse(packed.stdout) as [{ filename: string }]

  // A fresh project, as a user would write it: the relay, and the Effect it is written against.
  const own = JSON.parse(readFileSync(Path.join(ROOT, "package.json"), "utf8")) as {
    dependencies: Record<string, string>
  }
  project = Path.join(work, "app")
  cpSync(Path.join(work, filename), Path.join(project, filename))
  writeFileSync(
    Path.join(project, "package.json"),
    JSON.stringify({
      name: "relay-embedding-check",
      private: true,
      type: "module",
      dependencies: {
        "pyrycode-relay": `file:./${filename}`,
        effect: own.dependencies["effect"],
        "@effect/platform-node": own.dependencies["@effect/platform-node"]
      }
    })
  )
  try {
    await run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"], {
      cwd: project,
      env: userEnv(),
      maxBuffer: 16 * 1024 * 1024
    })
  } catch (error) {
    const text = `${(error as { stderr?: string }).stderr ?? ""}${(error as Error).message}`
    if (NETWORK.test(text)) return skipLoudly(`the npm registry is unreachable (${text.split("\n")[0]})`)
    throw error
  }
  for (const example of EXAMPLES) {
    cpSync(Path.join(project, "node_modules/pyrycode-relay/docs/examples", example), Path.join(project, example))
  }
}, 300_000)

afterAll(() => {
  if (work !== "") rmSync(work, { recursive: true, force: true })
})

describe("the packed package in a fresh project on the machine's Node", () => {
  it("installs on Node 20 or later, with the examples and types it documents", async (context) => {
    if (skipped !== undefined) return context.skip()
    const { stdout } = await run(SYSTEM_NODE, ["--version"])
    process.stdout.write(`packed.test.ts: examples run on ${SYSTEM_NODE} ${stdout.trim()}\n`)
    expect(Number(/^v(\d+)/.exec(stdout)?.[1])).toBeGreaterThanOrEqual(20)
    const installed = Path.join(project, "node_modules/pyrycode-relay")
    expect(existsSync(Path.join(installed, "dist/index.js"))).toBe(true)
    expect(existsSync(Path.join(installed, "dist/index.d.ts"))).toBe(true)
    expect(existsSync(Path.join(installed, "dist/service/relay.mjs"))).toBe(true)
    expect(existsSync(Path.join(installed, "src"))).toBe(false)
  })

  it("runs app-with-relay.mjs: the app's route, logger and metrics, and the relay, on one port", async (context) => {
    if (skipped !== undefined) return context.skip()
    const example = await runExample({ node: SYSTEM_NODE, cwd: project, file: "app-with-relay.mjs" })
    await checkAppWithRelay(example)
    process.stdout.write(`packed.test.ts: app-with-relay.mjs wrote:\n${example.output()}`)
  }, 60_000)

  it("runs admin-counts.mjs: the app's admin routes read the relay's Registry", async (context) => {
    if (skipped !== undefined) return context.skip()
    const example = await runExample({ node: SYSTEM_NODE, cwd: project, file: "admin-counts.mjs" })
    await checkAdminCounts(example)
    process.stdout.write(`packed.test.ts: admin-counts.mjs wrote:\n${example.output()}`)
  }, 60_000)
})
