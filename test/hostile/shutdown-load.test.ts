/**
 * Shutdown under load (issue 7; SPEC §1.6, §10): SIGTERM while 100 phones and their binaries
 * stream, and SIGTERM while a peer that never answers holds the drain until its deadline.
 */
import * as Net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { rawUpgrade } from "../../bench/lib/raw.ts"
import { dialBinary, dialPhone, eventually, type Peer, sleep } from "../support/Peers.ts"
import { killTracked, type RelayProcess, startTrackedRelay as startRelay } from "../support/RelayProcess.ts"

/** A failed test must not leave a relay running. */
afterEach(killTracked)

const logged = (relay: RelayProcess, event: string) => relay.logs.some((l) => l.includes(`"event":"${event}"`))

describe("SIGTERM under load", () => {
  it("closes 100 streaming phones and their 10 binaries 1001 `shutting down` and exits 0 inside the drain deadline", async () => {
    const relay = await startRelay(["--max-connections-per-ip", "0"])
    const SERVERS = 10
    const PER_SERVER = 10
    const binaries: Array<Peer> = []
    for (let s = 0; s < SERVERS; s++) {
      const binary = await dialBinary(relay.url, `shutdown-load-${s}`)
      // Echo every frame back: traffic flows both ways while the relay shuts down.
      binary.ws.on("message", (data: Buffer) => {
        const text = data.toString()
        if (text.includes(`"frame":`) && binary.ws.readyState === WebSocket.OPEN) binary.ws.send(text)
      })
      binaries.push(binary)
    }
    const phones = await Promise.all(
      Array.from({ length: SERVERS * PER_SERVER }, (_, i) => dialPhone(relay.url, `shutdown-load-${i % SERVERS}`))
    )
    await eventually(async () => {
      const h = (await (await fetch(`${relay.httpUrl}/healthz`)).json()) as { connected_phones: number }
      return h.connected_phones === SERVERS * PER_SERVER
    }, 15_000)

    // Each phone streams a sequence-numbered frame every 20 ms until its connection closes.
    const sent = phones.map(() => 0)
    const streams = phones.map((phone, i) =>
      (async () => {
        while (phone.ws.readyState === WebSocket.OPEN) {
          phone.send(`{"seq":${sent[i]!++},"pad":"${"x".repeat(100)}"}`)
          await sleep(20)
        }
      })()
    )
    await eventually(() => phones.every((p) => p.messages.length >= 30), 20_000)

    const started = Date.now()
    const code = await relay.stop("SIGTERM")
    const exitMs = Date.now() - started
    const closes = await Promise.all([...phones, ...binaries].map((p) => p.closed))
    await Promise.all(streams)

    const byKind = closes.reduce<Record<string, number>>((acc, c) => {
      acc[`${c.code} ${c.reason}`] = (acc[`${c.code} ${c.reason}`] ?? 0) + 1
      return acc
    }, {})
    // What came back before the close: each echo once, in order.
    const outOfOrder = phones.filter((p) =>
      p.messages.some((m, i) => (JSON.parse(m) as { seq: number }).seq !== i)
    ).length
    console.log(JSON.stringify({
      case: "SIGTERM with 100 streaming phones",
      exitMs,
      closes: byKind,
      framesSent: sent.reduce((a, b) => a + b, 0),
      echoesReceived: phones.reduce((n, p) => n + p.messages.length, 0),
      phonesWithEchoesOutOfOrder: outOfOrder
    }))
    expect(code).toBe(0)
    expect(exitMs).toBeLessThan(10_000) // the default drain deadline
    expect(byKind).toEqual({ "1001 shutting down": SERVERS * PER_SERVER + SERVERS })
    expect(outOfOrder).toBe(0)
    expect(logged(relay, "shutdown started")).toBe(true)
    expect(logged(relay, "shutdown complete")).toBe(true)
    expect(logged(relay, "drain incomplete")).toBe(false)
  }, 60_000)
})

describe("SIGTERM with a peer that never answers", () => {
  it("holds the drain to --drain-timeout, logs `drain incomplete`, exits 0; /readyz is 503 and new dials are refused meanwhile", async () => {
    const relay = await startRelay(["--drain-timeout", "2s"]) // the close timeout (5 s) is longer
    const port = relay.port
    const binary = await dialBinary(relay.url, "drain-normal")
    const phone = await dialPhone(relay.url, "drain-normal")
    // A binary that completed the upgrade and then never reads nor answers anything again.
    const stuck = await rawUpgrade(port, "/v1/server", {
      "X-Pyrycode-Server": "drain-stuck",
      "X-Pyrycode-Version": "1",
      "User-Agent": "stuck"
    })
    await eventually(async () => {
      const h = (await (await fetch(`${relay.httpUrl}/healthz`)).json()) as { connected_binaries: number }
      return h.connected_binaries === 2
    })

    // Connections opened before the signal, each with a request head still incomplete: the
    // listener stops accepting at the signal, so only such a request can show the drain's answers.
    const pending = (head: string) => {
      const socket = Net.connect(port, "127.0.0.1")
      let response = ""
      socket.on("data", (d: Buffer) => (response += d.toString("latin1")))
      socket.on("error", () => {})
      socket.write(head)
      return {
        finish: () => socket.write("\r\n"),
        response: () => response,
        destroy: () => socket.destroy()
      }
    }
    const readyz = pending("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    const lateDial = pending(
      "GET /v1/client HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
        "X-Pyrycode-Server: drain-normal\r\nX-Pyrycode-Token: t\r\nUser-Agent: late\r\n"
    )
    expect((await fetch(`${relay.httpUrl}/readyz`)).status).toBe(200)
    await sleep(200)

    const started = Date.now()
    relay.child.kill("SIGTERM")
    await eventually(() => logged(relay, "shutdown started"), 3_000)
    readyz.finish()
    lateDial.finish()
    // A new TCP connection is refused while the stuck peer holds the drain.
    const refused = await new Promise<string>((resolve) => {
      const s = Net.connect(port, "127.0.0.1")
      s.once("connect", () => (s.destroy(), resolve("connected")))
      s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
    })
    const refusedAtMs = Date.now() - started
    await eventually(() => readyz.response().includes("\r\n\r\n") && lateDial.response().includes("\r\n\r\n"), 1_500)
      .catch(() => undefined)
    const readyzAtMs = Date.now() - started
    const drainingCounted = await fetch(relay.metricsUrl)
      .then(async (r) => /connections_rejected_total\{reason="draining"\} (\d+)/.exec(await r.text())?.[1] ?? "absent")
      .catch((e: Error) => `metrics unreachable: ${e.message}`)

    const code = await relay.exited
    const exitMs = Date.now() - started
    readyz.destroy()
    lateDial.destroy()
    stuck.destroy()
    console.log(JSON.stringify({
      case: "SIGTERM with a stuck peer",
      exitMs,
      readyz: readyz.response().split("\r\n")[0],
      readyzBody: readyz.response().split("\r\n\r\n")[1] ?? "",
      readyzAtMs,
      lateUpgrade: lateDial.response().split("\r\n")[0],
      drainingCounted,
      newConnect: refused,
      refusedAtMs
    }))
    expect(code).toBe(0)
    // At the deadline (2 s), not at the close timeout (5 s) nor later.
    expect(exitMs).toBeGreaterThanOrEqual(1_900)
    expect(exitMs).toBeLessThan(4_500)
    expect(logged(relay, "drain incomplete")).toBe(true)
    expect(logged(relay, "shutdown complete")).toBe(true)
    expect(readyz.response()).toMatch(/^HTTP\/1\.1 503 /)
    expect(readyz.response()).toContain(`{"status":"draining"}`)
    expect(lateDial.response()).toMatch(/^HTTP\/1\.1 503 /)
    expect(refused).toBe("ECONNREFUSED")
    expect(refusedAtMs).toBeLessThan(exitMs)
    // The well-behaved peers were told at once.
    expect(await binary.closed).toEqual({ code: 1001, reason: "shutting down" })
    expect(await phone.closed).toEqual({ code: 1001, reason: "shutting down" })
  }, 30_000)
})
