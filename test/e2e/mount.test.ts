/**
 * The relay mounted on a server the application owns (`Relay.layerOnServer`, issue 17 item 2):
 * a real Effect app — `NodeHttpServer` + `HttpRouter.serve`, with its own route, its own
 * WebSocket route and a catch-all — and the relay on the same port. The relay takes its two
 * endpoints only; the app sees everything else and never a relay upgrade.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import WebSocket from "ws"
import { afterEach, describe, expect, it } from "vitest"
import { Relay, RelayConfig } from "pyrycode-relay"
import { dialBinary, dialPhone, envelopes, eventually, type Peer, upgradeStatus } from "../support/Peers.ts"
import { freePort } from "../support/RelayProcess.ts"

const config = RelayConfig.layerFromValues({ metricsListen: undefined, logLevel: "error" })

/** What the app's catch-all route saw: a relay request there would mean the app answered it too. */
const appSaw: Array<string> = []

const AppRoutes = Layer.mergeAll(
  HttpRouter.add("GET", "/api/hello", HttpServerResponse.text("hello from the app")),
  // The app's own WebSocket: a greeting, then open until the client closes.
  HttpRouter.add(
    "GET",
    "/app/ws",
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const socket = yield* request.upgrade
      yield* Effect.scoped(Effect.gen(function*() {
        // The 101 is sent when the reader is acquired.
        const reader = yield* socket.reader
        const writer = yield* socket.writer
        yield* writer.write("app socket")
        for (;;) yield* reader.pull
      })).pipe(Effect.ignore)
      return HttpServerResponse.empty()
    })
  ),
  HttpRouter.add("*", "/*", (request) =>
    Effect.sync(() => {
      appSaw.push(request.url)
      return HttpServerResponse.text("the app's 404", { status: 404 })
    })),
  Relay.routes
)

/** The app, listening on `port` with the relay mounted on its server. */
const makeApp = (server: Http.Server, port: number) =>
  HttpRouter.serve(AppRoutes, { disableLogger: true }).pipe(
    Layer.provide(Relay.layerOnServer(server).pipe(Layer.provide(config))),
    Layer.provide(NodeHttpServer.layer(() => server, { host: "127.0.0.1", port }))
  )

const peers: Array<Peer | WebSocket> = []
const fibers: Array<Fiber.Fiber<unknown, unknown>> = []
afterEach(async () => {
  for (const peer of peers.splice(0)) ("ws" in peer ? peer.ws : peer).terminate()
  for (const fiber of fibers.splice(0)) await Effect.runPromise(Fiber.interrupt(fiber))
  appSaw.length = 0
})

const start = async (layer: Layer.Layer<never, unknown>, port: number) => {
  fibers.push(Effect.runFork(Layer.launch(layer)))
  await eventually(async () => {
    try {
      return (await fetch(`http://127.0.0.1:${port}/api/hello`)).status === 200
    } catch {
      return false
    }
  })
}

const appSocket = (url: string) =>
  new Promise<{ ws: WebSocket; first: string }>((resolve, reject) => {
    const ws = new WebSocket(url)
    peers.push(ws)
    ws.once("message", (data: Buffer) => resolve({ ws, first: data.toString() }))
    ws.once("error", reject)
  })

describe("relay mounted on the application's server", () => {
  it("shares one port: the app's routes and WebSocket, the relay's endpoints and health", async () => {
    const port = await freePort()
    await start(makeApp(Http.createServer(), port), port)
    const base = `http://127.0.0.1:${port}`
    const ws = `ws://127.0.0.1:${port}`

    expect(await (await fetch(`${base}/api/hello`)).text()).toBe("hello from the app")
    expect((await fetch(`${base}/elsewhere`)).status).toBe(404)
    expect((await appSocket(`${ws}/app/ws`)).first).toBe("app socket")

    const binary = await dialBinary(ws, "mounted")
    const phone = await dialPhone(ws, "mounted")
    peers.push(binary, phone)
    phone.send(`{"hi":1}`)
    await binary.waitFor(1)
    expect(envelopes(binary)[0]!.frame).toEqual({ hi: 1 })
    const health = await (await fetch(`${base}/healthz`)).json()
    expect(health).toMatchObject({ status: "ok", connected_binaries: 1, connected_phones: 1 })
    expect((await fetch(`${base}/readyz`)).status).toBe(200)

    // The relay's gate answers its endpoints' refusals; the relay's 426 without an upgrade.
    expect(await upgradeStatus(`${ws}/v1/server`, { "X-Pyrycode-Server": "x" })).toBe(400)
    expect((await fetch(`${base}/v1/client`)).status).toBe(426)
    // A near miss is the app's path, not the relay's.
    expect((await fetch(`${base}/v1/server/`)).status).toBe(404)
    expect(appSaw).toEqual(["/elsewhere", "/v1/server/"])
  })

  it("shutting the app down drains the relay at once (1001), not after the server's grace", async () => {
    const port = await freePort()
    await start(makeApp(Http.createServer(), port), port)
    const ws = `ws://127.0.0.1:${port}`
    const binary = await dialBinary(ws, "draining")
    const phone = await dialPhone(ws, "draining")
    const app = await appSocket(`${ws}/app/ws`)
    peers.push(binary, phone)
    app.ws.on("close", () => {})
    const started = Date.now()
    // The app's own socket is the app's to end; this test ends it when the relay has drained.
    void phone.closed.then(() => app.ws.close())
    await Effect.runPromise(Fiber.interrupt(fibers.pop()!))
    expect(await phone.closed).toEqual({ code: 1001, reason: "shutting down" })
    expect(await binary.closed).toEqual({ code: 1001, reason: "shutting down" })
    expect(Date.now() - started).toBeLessThan(5_000)
  })

  it("on a server with no upgrade listener of its own: other upgrades get 404, requests reach the app", async () => {
    const port = await freePort()
    const server = Http.createServer((_req, res) => res.end("plain app"))
    const relay = Relay.layerOnServer(server).pipe(Layer.provide(config))
    fibers.push(Effect.runFork(Layer.launch(relay)))
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve))
    try {
      await eventually(async () => (await upgradeStatus(`ws://127.0.0.1:${port}/other`, {})) === 404)
      expect(await (await fetch(`http://127.0.0.1:${port}/other`)).text()).toBe("plain app")
      const binary = await dialBinary(`ws://127.0.0.1:${port}`, "plain")
      peers.push(binary)
    } finally {
      for (const peer of peers.splice(0)) ("ws" in peer ? peer.ws : peer).terminate()
      await Effect.runPromise(Fiber.interrupt(fibers.pop()!))
      await new Promise((resolve) => server.close(resolve))
    }
  })

  it("unmounting gives the paths back to the app; one server carries one relay", async () => {
    const port = await freePort()
    const server = Http.createServer((_req, res) => res.end(`app: ${_req.url}`))
    const emit = server.emit
    const relay = Relay.layerOnServer(server).pipe(Layer.provide(config))
    const first = Effect.runFork(Layer.launch(relay))
    await eventually(() => server.emit !== emit)
    // A second relay on the same server is refused at boot.
    const second = await Effect.runPromise(Effect.exit(Layer.launch(relay)))
    expect(JSON.stringify(second)).toContain("ServerMountError")
    await Effect.runPromise(Fiber.interrupt(first))
    expect(server.emit).toBe(emit)
    expect(Object.hasOwn(server, "emit")).toBe(false)
    expect(server.listenerCount("upgrade")).toBe(0)
    server.listen(port, "127.0.0.1")
    try {
      await eventually(() => server.listening)
      expect(await (await fetch(`http://127.0.0.1:${port}/v1/server`)).text()).toBe("app: /v1/server")
      expect((server.address() as AddressInfo).port).toBe(port)
    } finally {
      await new Promise((resolve) => server.close(resolve))
    }
  })
})
