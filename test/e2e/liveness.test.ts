/**
 * Liveness end to end (SPEC §3.3, §6): the conflict probe and takeover, the heartbeat, and the
 * close-handshake deadline, with real sockets against the relay process.
 */
import * as Net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type RelayProcess, startRelay } from "../support/RelayProcess.ts"
import { dialBinary, dialPhone, envelopes, eventually, phonesRegistered, sleep } from "../support/Peers.ts"

let relay: RelayProcess
let n = 0
const sid = () => `live-${process.pid}-${++n}`
/** A binary whose socket never answers pings: alive at TCP level, dead to the probe. */
const silent = { autoPong: false } as const

beforeAll(async () => {
  relay = await startRelay(["--grace-period", "300ms", "--probe-timeout", "500ms"])
})
afterAll(async () => {
  await relay.stop()
})

const takeovers = async () => {
  const text = await (await fetch(relay.metricsUrl)).text()
  return Number(/^pyrycode_relay_takeovers_total(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1])
}
const health = async () => (await (await fetch(`${relay.httpUrl}/healthz`)).json()) as Record<string, number>

describe("conflict probe", () => {
  it("takes over from a silent incumbent: incumbent 1011, phones 4404, and the new holder survives past 3× the grace", async () => {
    const serverId = sid()
    const incumbent = await dialBinary(relay.url, serverId, { wsOptions: silent })
    const phone = await dialPhone(relay.url, serverId)
    await phonesRegistered(relay, serverId)
    const started = Date.now()
    const newcomer = await dialBinary(relay.url, serverId)
    expect(await incumbent.closed).toEqual({ code: 1011, reason: "heartbeat timeout" })
    expect(Date.now() - started).toBeLessThan(2000)
    expect(await phone.closed).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
    const fresh = await dialPhone(relay.url, serverId)
    await sleep(1000) // > 3 × 300 ms: no stray grace from the displaced incumbent
    expect(newcomer.ws.readyState).toBe(newcomer.ws.OPEN)
    fresh.send(`"after takeover"`)
    await newcomer.waitFor(1)
    expect(envelopes(newcomer)[0]!.frame).toBe("after takeover")
    expect((await health()).connected_binaries).toBeGreaterThanOrEqual(1)
    fresh.ws.close()
    newcomer.ws.close()
  })

  it("lets exactly one of two newcomers take over a dead incumbent; the other gets 4409", async () => {
    const serverId = sid()
    const incumbent = await dialBinary(relay.url, serverId, { wsOptions: silent })
    const [a, b] = await Promise.all([dialBinary(relay.url, serverId), dialBinary(relay.url, serverId)])
    await incumbent.closed
    const first = await Promise.race([
      a.closed.then((c) => ["a", c] as const),
      b.closed.then((c) => ["b", c] as const),
      sleep(1500).then(() => undefined)
    ])
    expect(first?.[1]).toEqual({ code: 4409, reason: "server-id already claimed" })
    const winner = first?.[0] === "a" ? b : a
    await sleep(300)
    expect(winner.ws.readyState).toBe(winner.ws.OPEN)
    winner.ws.close()
  })

  it("a newcomer that leaves during the probe never takes over: incumbent and phones untouched, no takeover", async () => {
    const serverId = sid()
    const incumbent = await dialBinary(relay.url, serverId, { wsOptions: silent })
    const phone = await dialPhone(relay.url, serverId)
    const before = await takeovers()
    const newcomer = await dialBinary(relay.url, serverId)
    newcomer.ws.terminate() // gone long before the 500 ms probe timeout
    await sleep(1200)
    expect(incumbent.ws.readyState).toBe(incumbent.ws.OPEN)
    expect(phone.ws.readyState).toBe(phone.ws.OPEN)
    expect(await takeovers()).toBe(before)
    // The incumbent still serves its phone.
    phone.send(`"still here"`)
    await incumbent.waitFor(1)
    expect(envelopes(incumbent)[0]!.frame).toBe("still here")
    phone.ws.close()
    incumbent.ws.close()
  })

  it("a live incumbent answers the probe even while one of its phones has stopped reading", async () => {
    const serverId = sid()
    const incumbent = await dialBinary(relay.url, serverId)
    const stalled = await dialPhone(relay.url, serverId)
    stalled.send("0")
    await incumbent.waitFor(1)
    const connId = envelopes(incumbent)[0]!.conn_id as string
    ;(stalled.ws as unknown as { _socket: Net.Socket })._socket.pause()
    const frame = `{"conn_id":"${connId}","frame":"${"x".repeat(60_000)}"}`
    for (let i = 0; i < 50; i++) incumbent.send(frame) // ~3 MB towards a phone that reads nothing
    await sleep(200)
    const newcomer = await dialBinary(relay.url, serverId)
    expect(await newcomer.closed).toEqual({ code: 4409, reason: "server-id already claimed" })
    expect(incumbent.ws.readyState).toBe(incumbent.ws.OPEN)
    stalled.ws.terminate()
    incumbent.ws.close()
  })
})

describe("heartbeat", () => {
  it("closes a peer that stops answering pings with 1011 `heartbeat timeout`, and its slot goes to grace", async () => {
    const hb = await startRelay(["--heartbeat-interval", "300ms", "--heartbeat-timeout", "300ms", "--grace-period", "10s"])
    const serverId = sid()
    const binary = await dialBinary(hb.url, serverId, { wsOptions: silent })
    const phone = await dialPhone(hb.url, serverId)
    const answering = await dialBinary(hb.url, sid())
    const started = Date.now()
    expect(await binary.closed).toEqual({ code: 1011, reason: "heartbeat timeout" })
    const elapsed = Date.now() - started
    expect(elapsed).toBeGreaterThanOrEqual(500)
    expect(elapsed).toBeLessThan(3000)
    await eventually(async () => {
      const h = (await (await fetch(`${hb.httpUrl}/healthz`)).json()) as Record<string, number>
      return h.connected_binaries === 1 && h.connected_phones === 1
    })
    await sleep(1000) // many cycles: a peer that answers survives
    expect(answering.ws.readyState).toBe(answering.ws.OPEN)
    expect(phone.ws.readyState).toBe(phone.ws.OPEN)
    answering.ws.close()
    phone.ws.close()
    await hb.stop()
  })
})

describe("close handshake deadline", () => {
  it("destroys a peer that never answers our close frame after 5 s", async () => {
    const socket = Net.connect(relay.port, "127.0.0.1")
    socket.on("error", () => {})
    socket.write(
      "GET /v1/client HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
        `X-Pyrycode-Server: ${sid()}\r\nX-Pyrycode-Token: t\r\nUser-Agent: u\r\n\r\n`
    )
    let sawClose = 0
    socket.on("data", (d: Buffer) => {
      // The relay's 4404 close frame: 0x88 <len> <code>; we never answer it.
      if (sawClose === 0 && d.includes(Buffer.from([0x88]))) sawClose = Date.now()
    })
    const gone = await new Promise<number>((resolve) => socket.on("close", () => resolve(Date.now())))
    expect(sawClose).toBeGreaterThan(0)
    expect(gone - sawClose).toBeGreaterThanOrEqual(4500)
    expect(gone - sawClose).toBeLessThan(7000)
  }, 15_000)
})
