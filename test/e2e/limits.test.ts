/**
 * Abuse limits end to end (SPEC §7, §1.4, §6): per-IP rate limit 429, global and per-IP caps
 * 503 with the slot held for the handler's life, message and handshake deadlines.
 */
import * as Net from "node:net"
import { describe, expect, it } from "vitest"
import { startRelay } from "../support/RelayProcess.ts"
import { rawUpgrade } from "../../bench/lib/raw.ts"
import { dialBinary, dialPhone, eventually, sleep, upgradeStatus } from "../support/Peers.ts"

const clientHeaders = (serverId: string, extra: Record<string, string> = {}) => ({
  "X-Pyrycode-Server": serverId,
  "X-Pyrycode-Token": "t",
  "User-Agent": "a",
  ...extra
})

describe("per-IP rate limit", () => {
  it("answers 429 past the burst, before the header gate, and keys on X-Forwarded-For only when trusted", async () => {
    const relay = await startRelay(["--rate-limit-burst", "3", "--rate-limit-refill", "1h"])
    // Headers missing on purpose: the first 3 reach the gate (400), the 4th is rate limited first.
    const statuses = []
    for (let i = 0; i < 4; i++) statuses.push(await upgradeStatus(`${relay.url}/v1/client`, {}))
    expect(statuses).toEqual([400, 400, 400, 429])
    // Without --trust-x-forwarded-for a forged header does not buy a new bucket.
    expect(await upgradeStatus(`${relay.url}/v1/client`, { "X-Forwarded-For": "203.0.113.9" })).toBe(429)
    // /healthz is not rate limited.
    expect((await fetch(`${relay.httpUrl}/healthz`)).status).toBe(200)
    await relay.stop()

    const trusting = await startRelay(["--rate-limit-burst", "1", "--rate-limit-refill", "1h", "--trust-x-forwarded-for"])
    expect(await upgradeStatus(`${trusting.url}/v1/client`, { "X-Forwarded-For": "198.51.100.1, 10.0.0.1" })).toBe(400)
    expect(await upgradeStatus(`${trusting.url}/v1/client`, { "X-Forwarded-For": "198.51.100.1" })).toBe(429)
    expect(await upgradeStatus(`${trusting.url}/v1/client`, { "X-Forwarded-For": "198.51.100.2" })).toBe(400)
    await trusting.stop()
  })
})

describe("connection caps", () => {
  it("answers 503 at the global cap; 4404-rejected phones and binaries gone into grace free their slot", async () => {
    const relay = await startRelay(["--max-connections", "2", "--grace-period", "30s"])
    const binary = await dialBinary(relay.url, "cap")
    const phone = await dialPhone(relay.url, "cap")
    expect(await upgradeStatus(`${relay.url}/v1/client`, clientHeaders("cap"))).toBe(503)
    phone.ws.close()
    await phone.closed
    // A phone rejected 4404 held a slot only while its handler ran.
    await eventually(async () => {
      const lost = await dialPhone(relay.url, "nobody").catch(() => undefined)
      if (lost === undefined) return false
      return (await lost.closed).code === 4404
    })
    const again = await dialPhone(relay.url, "cap")
    expect(await upgradeStatus(`${relay.url}/v1/server`, { "X-Pyrycode-Server": "x", "X-Pyrycode-Version": "1", "User-Agent": "u" }))
      .toBe(503)
    // The binary's connection ends: its slot goes into grace and its cap slot is freed.
    binary.ws.close()
    await binary.closed
    await eventually(async () => {
      try {
        const other = await dialBinary(relay.url, "other")
        other.ws.close()
        return true
      } catch {
        return false
      }
    })
    again.ws.close()
    await relay.stop()
  })

  it("answers 503 past the per-IP cap", async () => {
    const relay = await startRelay(["--max-connections-per-ip", "2"])
    const a = await dialBinary(relay.url, "ip-a")
    const b = await dialBinary(relay.url, "ip-b")
    expect(await upgradeStatus(`${relay.url}/v1/server`, { "X-Pyrycode-Server": "c", "X-Pyrycode-Version": "1", "User-Agent": "u" }))
      .toBe(503)
    a.ws.close()
    b.ws.close()
    await relay.stop()
  })
})

/** A masked client frame header (payload ≤ 125 bytes). */
const frame = (opcode: number, fin: boolean, payload: Buffer): Buffer => {
  const mask = Buffer.from([1, 2, 3, 4])
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!))
  return Buffer.concat([Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | payload.length]), mask, masked])
}

/** Reads the close frame the relay sends: its code. */
const closeCode = (socket: Net.Socket): Promise<number> =>
  new Promise((resolve) => {
    let buf = Buffer.alloc(0)
    socket.resume()
    socket.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      while (buf.length >= 2) {
        const opcode = buf[0]! & 0x0f
        const len = buf[1]! & 0x7f
        if (buf.length < 2 + len) return
        if (opcode === 0x8) return resolve(len >= 2 ? buf.readUInt16BE(2) : 1005)
        buf = buf.subarray(2 + len)
      }
    })
    socket.on("close", () => resolve(-1))
  })

describe("deadlines", () => {
  it("closes 1008 when a started message is not completed in time", async () => {
    const relay = await startRelay(["--message-timeout", "1s"])
    const binary = await dialBinary(relay.url, "slowmsg")
    const socket = await rawUpgrade(relay.port, "/v1/client", clientHeaders("slowmsg"))
    const code = closeCode(socket)
    const started = Date.now()
    socket.write(frame(0x1, false, Buffer.from(`{"part":`)))
    expect(await code).toBe(1008)
    const elapsed = Date.now() - started
    expect(elapsed).toBeGreaterThanOrEqual(900)
    expect(elapsed).toBeLessThan(4000)
    expect(binary.messages.filter((m) => m.includes("frame"))).toEqual([])
    socket.destroy()
    binary.ws.close()
    await relay.stop()
  })

  it("lets idle time between messages be unbounded (only started messages have a deadline)", async () => {
    const relay = await startRelay(["--message-timeout", "500ms"])
    const binary = await dialBinary(relay.url, "idle")
    const phone = await dialPhone(relay.url, "idle")
    await sleep(1200)
    phone.send("1")
    await binary.waitFor(1)
    phone.ws.close()
    binary.ws.close()
    await relay.stop()
  })

  it("closes a connection whose request head trickles in past the handshake deadline; nothing registered", async () => {
    const relay = await startRelay(["--handshake-timeout", "1s"])
    const socket = Net.connect(relay.port, "127.0.0.1")
    const closed = new Promise<number>((resolve) => socket.on("close", () => resolve(Date.now())))
    socket.on("error", () => {})
    const started = Date.now()
    const head = "GET /v1/server HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Pyrycode-Server: slow\r\n"
    let i = 0
    const trickle = setInterval(() => {
      if (i < head.length && !socket.destroyed) socket.write(head[i++]!)
    }, 100)
    const end = await closed
    clearInterval(trickle)
    expect(end - started).toBeLessThan(3000)
    expect(end - started).toBeGreaterThanOrEqual(900)
    const health = (await (await fetch(`${relay.httpUrl}/healthz`)).json()) as Record<string, number>
    expect(health.connected_binaries).toBe(0)
    await relay.stop()
  })
})
