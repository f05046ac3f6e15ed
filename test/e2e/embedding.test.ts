/**
 * The library surface (SPEC §12): the documented examples, each run as docs/embedding.md shows
 * it — here on the sources (Node's type stripping, the package's `pyrycode-source` condition);
 * test/e2e/packed.test.ts runs them again from a fresh install of the packed package on Node 20.
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import { readFileSync } from "node:fs"
import * as Path from "node:path"
import { describe, expect, it } from "vitest"
import { makeApp } from "../../docs/examples/embedded-relay.ts"
import { relayConfigLayer, RelayConfig } from "pyrycode-relay"
import { freePort } from "../support/RelayProcess.ts"
import { dialBinary, dialPhone, envelopes, eventually } from "../support/Peers.ts"
import { checkAdminCounts, checkAppWithRelay, EXAMPLES, runExample } from "../support/Examples.ts"

const ROOT = Path.resolve(import.meta.dirname, "../..")

describe("embedding", () => {
  it("docs/embedding.md shows every tested example verbatim", () => {
    const doc = readFileSync(Path.join(ROOT, "docs/embedding.md"), "utf8")
    for (const file of [...EXAMPLES, "embedded-relay.ts"]) {
      const example = readFileSync(Path.join(ROOT, "docs/examples", file), "utf8")
      expect(doc).toContain(example.trim())
    }
  })

  const onSources = (file: string) =>
    runExample({
      node: process.execPath,
      nodeArgs: ["--conditions=pyrycode-source"],
      cwd: Path.join(ROOT, "docs/examples"),
      file
    })

  it("app-with-relay.mjs: the app's route, logger and metrics, and the relay, on one port", async () => {
    await checkAppWithRelay(await onSources("app-with-relay.mjs"))
  })

  it("admin-counts.mjs: the app's admin routes read the relay's Registry", async () => {
    await checkAdminCounts(await onSources("admin-counts.mjs"))
  })

  it("serves the app's own route and the relay on one listener, and shuts down with the app", async () => {
    const port = await freePort()
    const fiber = Effect.runFork(Layer.launch(makeApp(port)))
    const base = `http://127.0.0.1:${port}`
    await eventually(async () => {
      try {
        return (await fetch(`${base}/healthz`)).status === 200
      } catch {
        return false
      }
    })
    expect(await (await fetch(`${base}/hello`)).text()).toBe("hello from the app")
    expect((await fetch(`${base}/nope`)).status).toBe(404)
    const binary = await dialBinary(`ws://127.0.0.1:${port}`, "embedded")
    const phone = await dialPhone(`ws://127.0.0.1:${port}`, "embedded")
    phone.send(`{"hi":1}`)
    await binary.waitFor(1)
    expect(envelopes(binary)[0]!.frame).toEqual({ hi: 1 })
    await Effect.runPromise(Fiber.interrupt(fiber))
    expect(await phone.closed).toEqual({ code: 1001, reason: "shutting down" })
    await expect(fetch(`${base}/healthz`)).rejects.toThrow()
  })

  it("builds RelayConfig from flags and environment as a layer", async () => {
    const config = await Effect.runPromise(
      Effect.provide(
        Effect.map(RelayConfig, (c) => c),
        relayConfigLayer(["--grace-period", "2s"], { PYRYCODE_RELAY_MAX_PHONES_PER_SERVER: "3" })
      )
    )
    expect(config.maxPhonesPerServer).toBe(3)
    expect(config.gracePeriod).toMatchObject({ value: { _tag: "Millis", millis: 2000 } })
  })
})
