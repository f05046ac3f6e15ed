/**
 * No hidden process-wide state (issue 17 item 4): two relays in one process — in one
 * application, or side by side — each have their own listener, registry and counters, and the
 * library never calls `gc` unless its host opts in.
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import { afterEach, describe, expect, it } from "vitest"
import { freePort } from "../support/RelayProcess.ts"
import { dialBinary, dialPhone, eventually, type Peer } from "../support/Peers.ts"

// Installed before the package is imported: a module that captured `gc` at import would see it.
const gcCalls: Array<unknown> = []
;(globalThis as { gc?: unknown }).gc = (options: unknown) => gcCalls.push(options)
const { MinorGc, Relay, RelayConfig, RelayMetricRegistry } = await import("pyrycode-relay")

const relayOn = (port: number, metricsPort: number) =>
  Relay.layer.pipe(Layer.provide(RelayConfig.layerFromValues({
    listen: { host: "127.0.0.1", port },
    metricsListen: { host: "127.0.0.1", port: metricsPort },
    logLevel: "error"
  })))

const up = (port: number) =>
  eventually(async () => {
    try {
      return (await fetch(`http://127.0.0.1:${port}/healthz`)).status === 200
    } catch {
      return false
    }
  })

/** `pyrycode_relay_frames_forwarded_total{direction="phone_to_binary"}` on a metrics listener. */
const forwarded = async (metricsPort: number): Promise<number> => {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
  const line = text.split("\n").find((l) => l.startsWith(`pyrycode_relay_frames_forwarded_total{direction="phone_to_binary"}`))
  return Number(line?.split(" ")[1])
}

const open: Array<Peer> = []
const running: Array<Fiber.Fiber<unknown, unknown>> = []
afterEach(async () => {
  for (const peer of open.splice(0)) peer.ws.terminate()
  for (const fiber of running.splice(0)) await Effect.runPromise(Fiber.interrupt(fiber))
})

const launch = (layer: Layer.Layer<never, unknown>) => {
  const fiber = Effect.runFork(Layer.launch(layer))
  running.push(fiber)
}

/** A binary and a phone of `serverId` on the relay at `port`; one frame phone → binary. */
const roundTrip = async (port: number, serverId: string, frames = 1, frame = `{"hi":1}`) => {
  const binary = await dialBinary(`ws://127.0.0.1:${port}`, serverId)
  const phone = await dialPhone(`ws://127.0.0.1:${port}`, serverId)
  open.push(binary, phone)
  for (let i = 0; i < frames; i++) phone.send(frame)
  await binary.waitFor(frames, 10_000)
  return { binary, phone }
}

describe("two relays in one process", () => {
  it("two relays in one application are two relays: own listener, own registry", async () => {
    const [a, b, ma, mb] = await Promise.all([freePort(), freePort(), freePort(), freePort()])
    launch(Layer.mergeAll(relayOn(a, ma), relayOn(b, mb)))
    await up(a)
    await up(b)
    // The same server-id claimed on each: two registries, so neither is a conflict.
    const onA = await roundTrip(a, "same")
    const onB = await roundTrip(b, "same")
    expect(onA.binary.messages).toHaveLength(1)
    expect(onB.binary.messages).toHaveLength(1)
    expect(onA.binary.ws.readyState).toBe(onA.binary.ws.OPEN)
  })

  it("keeps separate counters: frames through one relay are not counted by the other", async () => {
    const [a, b, ma, mb] = await Promise.all([freePort(), freePort(), freePort(), freePort()])
    launch(relayOn(a, ma))
    launch(relayOn(b, mb))
    await up(a)
    await up(b)
    await roundTrip(a, "counted", 3)
    await eventually(async () => (await forwarded(ma)) === 3)
    expect(await forwarded(mb)).toBe(0)
  })

  it("records into the host's metric registry when it hands one over", async () => {
    const [a, ma] = await Promise.all([freePort(), freePort()])
    const registry: Metric.MetricRegistry = new Map()
    launch(relayOn(a, ma).pipe(Layer.provide(Layer.succeed(RelayMetricRegistry, registry))))
    await up(a)
    await roundTrip(a, "shared", 2)
    const series = () =>
      Effect.runSync(Effect.provideService(Metric.snapshot, Metric.MetricRegistry, registry)).find((m) =>
        m.id === "pyrycode_relay_frames_forwarded_total" && m.attributes?.["direction"] === "phone_to_binary"
      )
    await eventually(() => (series()?.state as { count?: number } | undefined)?.count === 2)
  })

  it("never calls gc unless the host provides MinorGc, then once per 8 MiB read", async () => {
    const [a, ma, b, mb] = await Promise.all([freePort(), freePort(), freePort(), freePort()])
    // ~8.4 MiB of phone frames (each under the 256 KiB frame limit).
    const frame = JSON.stringify({ pad: "x".repeat(200 * 1024) })
    launch(relayOn(a, ma))
    await up(a)
    await roundTrip(a, "no-gc", 43, frame)
    expect(gcCalls).toEqual([])

    launch(relayOn(b, mb).pipe(Layer.provide(Layer.succeed(MinorGc, (options) => gcCalls.push(options)))))
    await up(b)
    await roundTrip(b, "gc", 43, frame)
    await eventually(() => gcCalls.length >= 1)
    expect(gcCalls[0]).toEqual({ type: "minor", execution: "async" })
  })
})
