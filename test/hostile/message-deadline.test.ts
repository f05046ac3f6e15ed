/**
 * The message deadline (SPEC §1.4) against the relay process, over raw TCP, on both endpoints:
 * it applies to one unfinished message, so a peer streaming complete messages back to back is
 * never closed, however long the stream and however its reads split the messages; a message that
 * stops half-way is closed 1008.
 *
 * The stream is written so that no socket read ends on a message boundary: every TCP write holds
 * the tail of one message and the head of the next (Nagle off, a pause between writes).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { dialBinary, dialPhone, envelopes, type Peer, sleep } from "../support/Peers.ts"
import { buildFrame, closeOutcome, closePayload, OP, rawDial, type RawPeer } from "../support/RawFrames.ts"
import { type RelayProcess, startRelay } from "../support/RelayProcess.ts"

const MESSAGE_TIMEOUT_MS = 2000
const STREAM_MS = 5000
const WRITE_EVERY_MS = 20

let relay: RelayProcess
let n = 0
const sid = (tag: string) => `deadline-${tag}-${process.pid}-${++n}`

beforeAll(async () => {
  relay = await startRelay(["--message-timeout", `${MESSAGE_TIMEOUT_MS}ms`, "--grace-period", "500ms"])
})
afterAll(async () => {
  await relay.stop()
})

const phoneHeaders = (serverId: string) => ({
  "X-Pyrycode-Server": serverId,
  "X-Pyrycode-Token": "deadline-token",
  "User-Agent": "deadline-phone"
})
const binaryHeaders = (serverId: string) => ({
  "X-Pyrycode-Server": serverId,
  "X-Pyrycode-Version": "deadline-1",
  "User-Agent": "deadline-binary"
})

/** A ~2 KB JSON text: the message's number, padded. */
const payload = (i: number): string => JSON.stringify({ i, pad: "x".repeat(2000) })

/**
 * Streams messages `make(0..)` for `STREAM_MS`, each TCP write carrying the second half of one
 * frame and the first half of the next, then completes the last one. Returns how many were sent.
 */
const streamSplit = async (raw: RawPeer, make: (i: number) => string): Promise<number> => {
  const started = Date.now()
  let i = 0
  let pending = buildFrame({ opcode: OP.text, payload: make(i) })
  let cut = pending.length >> 1
  await raw.write(pending.subarray(0, cut))
  while (Date.now() - started < STREAM_MS && !raw.isClosed()) {
    const next = buildFrame({ opcode: OP.text, payload: make(i + 1) })
    const nextCut = next.length >> 1
    await raw.write(Buffer.concat([pending.subarray(cut), next.subarray(0, nextCut)]))
    i++
    pending = next
    cut = nextCut
    await sleep(WRITE_EVERY_MS)
  }
  await raw.write(pending.subarray(cut))
  return i + 1
}

const closeFrames = (raw: RawPeer) => raw.frames.filter((f) => f.opcode === OP.close)

describe("a stream of complete messages outlasting the message timeout", () => {
  it("phone endpoint: 5 s of split 2 KB messages under a 2 s timeout, never closed, all delivered in order", async () => {
    const serverId = sid("phone")
    const binary: Peer = await dialBinary(relay.url, serverId)
    const dialed = await rawDial(relay.port, "/v1/client", phoneHeaders(serverId))
    expect(dialed.status).toBe(101)
    const raw = dialed.peer!
    const sent = await streamSplit(raw, payload)
    expect(sent).toBeGreaterThan(100)
    await binary.waitFor(sent, 10_000)
    expect(closeFrames(raw)).toEqual([])
    expect(raw.isClosed()).toBe(false)
    expect(envelopes(binary).map((e) => (e.frame as { i: number }).i)).toEqual(Array.from({ length: sent }, (_, k) => k))
    await raw.write(buildFrame({ opcode: OP.close, payload: closePayload(1000) }))
    await closeOutcome(raw)
    binary.ws.close()
  })

  it("binary endpoint: 5 s of split 2 KB envelopes under a 2 s timeout, never closed, all delivered in order", async () => {
    const serverId = sid("binary")
    const dialed = await rawDial(relay.port, "/v1/server", binaryHeaders(serverId))
    expect(dialed.status).toBe(101)
    const raw = dialed.peer!
    const phone: Peer = await dialPhone(relay.url, serverId)
    phone.send("0")
    const hello = await raw.waitFrame((f) => f.opcode === OP.text)
    const connId = (JSON.parse(hello!.payload.toString()) as { conn_id: string }).conn_id
    const sent = await streamSplit(raw, (i) => `{"conn_id":"${connId}","frame":${payload(i)}}`)
    expect(sent).toBeGreaterThan(100)
    await phone.waitFor(sent, 10_000)
    expect(closeFrames(raw)).toEqual([])
    expect(raw.isClosed()).toBe(false)
    expect(phone.messages.map((m) => (JSON.parse(m) as { i: number }).i)).toEqual(Array.from({ length: sent }, (_, k) => k))
    phone.ws.close()
    await raw.write(buildFrame({ opcode: OP.close, payload: closePayload(1000) }))
    await closeOutcome(raw)
  })
})

describe("a message that stops half-way", () => {
  for (const path of ["/v1/client", "/v1/server"] as const) {
    it(`${path}: closed 1008 once the timeout passed since its first byte, not before`, async () => {
      const serverId = sid("stuck")
      const binary = path === "/v1/client" ? await dialBinary(relay.url, serverId) : undefined
      const dialed = await rawDial(relay.port, path, path === "/v1/client" ? phoneHeaders(serverId) : binaryHeaders(serverId))
      expect(dialed.status).toBe(101)
      const raw = dialed.peer!
      // Complete messages first (they must not count), then half a message.
      for (let i = 0; i < 5; i++) await raw.write(buildFrame({ opcode: OP.text, payload: "{}" }))
      const frame = buildFrame({ opcode: OP.text, payload: payload(0) })
      const startedAt = Date.now()
      await raw.write(frame.subarray(0, 100))
      const close = await raw.waitFrame((f) => f.opcode === OP.close, MESSAGE_TIMEOUT_MS + 5000)
      const after = Date.now() - startedAt
      expect(close?.payload.readUInt16BE(0)).toBe(1008)
      expect(after).toBeGreaterThanOrEqual(MESSAGE_TIMEOUT_MS - 50)
      // Our close reply would be read as the rest of the unfinished frame: hang up instead.
      raw.socket.destroy()
      binary?.ws.close()
    })
  }
})
