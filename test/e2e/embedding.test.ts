/**
 * The library surface (SPEC §12): the documented example runs the relay inside another Effect
 * app, next to the app's own route, on one listener.
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

const ROOT = Path.resolve(import.meta.dirname, "../..")

describe("embedding", () => {
  it("docs/embedding.md shows the tested example verbatim", () => {
    const doc = readFileSync(Path.join(ROOT, "docs/embedding.md"), "utf8")
    const example = readFileSync(Path.join(ROOT, "docs/examples/embedded-relay.ts"), "utf8")
    expect(doc).toContain(example.trim())
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
