/**
 * End-to-end routing against the relay process, with real `ws` clients: envelopes, splicing,
 * directives, close notices, ordering, health.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { clusterRedisForTests, type RelayProcess, startRelay } from "../support/RelayProcess.ts"
import { dialBinary, dialPhone, envelopes, eventually, type Peer, phonesRegistered, sleep } from "../support/Peers.ts"

let relay: RelayProcess
let n = 0
const sid = () => `srv-${process.pid}-${++n}`

beforeAll(async () => {
  relay = await startRelay(["--grace-period", "500ms"])
})
afterAll(async () => {
  await relay.stop()
})

const health = async () => (await fetch(`${relay.httpUrl}/healthz`)).json() as Promise<Record<string, unknown>>

/** A binary and a phone of one server-id, once the relay registered the phone (`phonesRegistered`). */
const pair = async (serverId = sid()): Promise<{ serverId: string; binary: Peer; phone: Peer }> => {
  const binary = await dialBinary(relay.url, serverId)
  const phone = await dialPhone(relay.url, serverId)
  await phonesRegistered(relay, serverId)
  return { serverId, binary, phone }
}

describe("phone → binary (wrap by splice)", () => {
  it("wraps the phone's raw text as {conn_id, frame} with exactly these keys in this order", async () => {
    const { serverId, binary, phone } = await pair()
    const raw = ` {"n":1.50,"e":"\\u00e9","big":12345678901234567890} `
    phone.send(raw)
    const [message] = await binary.waitFor(1)
    expect(message).toMatch(new RegExp(`^\\{"conn_id":"client-${serverId}-[0-9a-f]{8}","frame":`))
    const connId = (JSON.parse(message!) as { conn_id: string }).conn_id
    expect(message).toBe(`{"conn_id":"${connId}","frame":${raw}}`)
    expect(binary.binaryFlags[0]).toBe(false)
    expect(message).not.toContain("token")
    phone.ws.close()
    binary.ws.close()
  })

  it("ends the phone's session with 1000 on invalid JSON and leaves the binary connected", async () => {
    const { serverId, binary, phone } = await pair()
    phone.send(`"ok"`)
    phone.send("{not json")
    expect((await phone.closed).code).toBe(1000)
    await binary.waitFor(1)
    expect(JSON.parse(binary.messages[0]!).frame).toBe("ok")
    expect(binary.ws.readyState).toBe(binary.ws.OPEN)
    const other = await dialPhone(relay.url, serverId)
    other.send("2")
    await binary.waitFor(2)
    other.ws.close()
    binary.ws.close()
  })

  it("accepts binary-opcode frames as bytes and always delivers text frames", async () => {
    const { binary, phone } = await pair()
    phone.ws.send(Buffer.from(`{"bin":true}`), { binary: true })
    const [message] = await binary.waitFor(1)
    expect(JSON.parse(message!).frame).toEqual({ bin: true })
    expect(binary.binaryFlags[0]).toBe(false)
    binary.ws.close()
    phone.ws.close()
  })
})

describe("binary → phone (unwrap)", () => {
  it("delivers the exact raw text of the frame value as one text message", async () => {
    const { binary, phone } = await pair()
    phone.send(`"hello"`)
    const connId = envelopes(await binary.waitFor(1).then(() => binary))[0]!.conn_id as string
    binary.send(`{"frame": {"x":1.50, "s":"\\u00e9"} ,"conn_id":"${connId}","extra":[1,2]}`)
    const [received] = await phone.waitFor(1)
    expect(received).toBe(`{"x":1.50, "s":"\\u00e9"}`)
    expect(phone.binaryFlags[0]).toBe(false)
    binary.ws.close()
    phone.ws.close()
  })

  it("drops malformed envelopes, unknown conn_ids and wake requests without closing the binary", async () => {
    const { binary, phone } = await pair()
    phone.send("1")
    const connId = envelopes(await binary.waitFor(1).then(() => binary))[0]!.conn_id as string
    for (const bad of [
      "nope",
      "[]",
      `{"conn_id":5,"frame":1}`,
      `{"conn_id":"${connId}","close_code":70000}`,
      `{"conn_id":"${connId}","close_code":1.5}`,
      `{"conn_id":"${connId}"}`,
      `{"frame":1}`,
      `{"conn_id":"","frame":1}`,
      `{"conn_id":"client-other-00000000","frame":1}`,
      `{"push_wake":{"platform":"fcm","token":"device-token"}}`
    ]) binary.send(bad)
    binary.send(`{"conn_id":"${connId}","frame":"after"}`)
    expect(await phone.waitFor(1)).toEqual([`"after"`])
    expect(binary.ws.readyState).toBe(binary.ws.OPEN)
    binary.ws.close()
    phone.ws.close()
  })

  it("never reaches a phone of another server-id", async () => {
    const a = await pair()
    const b = await pair()
    b.phone.send("1")
    const bConnId = envelopes(await b.binary.waitFor(1).then(() => b.binary))[0]!.conn_id as string
    a.binary.send(`{"conn_id":"${bConnId}","frame":"intruder"}`)
    b.binary.send(`{"conn_id":"${bConnId}","frame":"own"}`)
    expect(await b.phone.waitFor(1)).toEqual([`"own"`])
    await sleep(100)
    expect(b.phone.messages).toEqual([`"own"`])
    for (const p of [a.binary, a.phone, b.binary, b.phone]) p.ws.close()
  })
})

describe("close directives", () => {
  const withConnId = async () => {
    const p = await pair()
    p.phone.send("0")
    await p.binary.waitFor(1)
    return { ...p, connId: envelopes(p.binary)[0]!.conn_id as string }
  }

  it("delivers queued frames, then the directive's frame, then closes with its code; no close notice", async () => {
    const { binary, phone, connId } = await withConnId()
    binary.send(`{"conn_id":"${connId}","frame":1}`)
    binary.send(`{"conn_id":"${connId}","frame":2}`)
    binary.send(`{"conn_id":"${connId}","frame":"bye","close_code":4000}`)
    binary.send(`{"conn_id":"${connId}","frame":"refused"}`)
    const closed = await phone.closed
    expect(phone.messages).toEqual(["1", "2", `"bye"`])
    expect(closed).toEqual({ code: 4000, reason: "" })
    await sleep(150)
    expect(binary.messages).toHaveLength(1)
    binary.ws.close()
  })

  it("closes without a frame, and replaces codes that may not appear on the wire by 1011", async () => {
    const a = await withConnId()
    a.binary.send(`{"conn_id":"${a.connId}","close_code":3001}`)
    expect(await a.phone.closed).toEqual({ code: 3001, reason: "" })
    expect(a.phone.messages).toEqual([])
    for (const code of [999, 1005, 1006, 1015, 2999, 5000]) {
      const b = await withConnId()
      b.binary.send(`{"conn_id":"${b.connId}","close_code":${code}}`)
      expect((await b.phone.closed).code).toBe(1011)
      b.binary.ws.close()
    }
    a.binary.ws.close()
  })

  it("acts only on close codes whose exact value is a whole number (4e3 and 4000.0 are 4000)", async () => {
    const { binary, phone, connId } = await withConnId()
    // Not whole numbers, though a float parse rounds them to 4000 and 0: malformed, dropped.
    binary.send(`{"conn_id":"${connId}","frame":1,"close_code":4000.0000000000000001}`)
    binary.send(`{"conn_id":"${connId}","frame":2,"close_code":1e-400}`)
    binary.send(`{"conn_id":"${connId}","frame":3}`)
    await phone.waitFor(1)
    await sleep(100)
    expect(phone.messages).toEqual(["3"])
    expect(phone.ws.readyState).toBe(phone.ws.OPEN)
    binary.send(`{"conn_id":"${connId}","frame":4,"close_code":4e3}`)
    expect(await phone.closed).toEqual({ code: 4000, reason: "" })
    const other = await withConnId()
    other.binary.send(`{"conn_id":"${other.connId}","close_code":4000.0}`)
    expect((await other.phone.closed).code).toBe(4000)
    other.binary.ws.close()
    binary.ws.close()
  })
})

describe("close notices", () => {
  it("tells the binary the code the phone closed with", async () => {
    const { binary, phone } = await pair()
    phone.send("0")
    await binary.waitFor(1)
    const connId = envelopes(binary)[0]!.conn_id
    phone.ws.close(4321)
    await binary.waitFor(2)
    expect(binary.messages[1]).toBe(`{"conn_id":"${connId}","close_code":4321}`)
    phone.ws.close()
    binary.ws.close()
  })

  it("reports 1000 echoed and 1001 for a TCP drop", async () => {
    const { serverId, binary, phone } = await pair()
    phone.send("0")
    await binary.waitFor(1)
    phone.ws.close(1000)
    await binary.waitFor(2)
    expect(JSON.parse(binary.messages[1]!)).toMatchObject({ close_code: 1000 })
    const dropped = await dialPhone(relay.url, serverId)
    dropped.send("0")
    await binary.waitFor(3)
    dropped.ws.terminate()
    await binary.waitFor(4)
    expect(JSON.parse(binary.messages[3]!)).toEqual({ conn_id: JSON.parse(binary.messages[2]!).conn_id, close_code: 1001 })
    expect(Object.keys(JSON.parse(binary.messages[3]!))).toEqual(["conn_id", "close_code"])
    binary.ws.close()
  })

  it("never tells a reclaiming binary about a phone it never saw", async () => {
    const { serverId, binary, phone } = await pair()
    binary.ws.terminate()
    await binary.closed
    const next = await dialBinary(relay.url, serverId)
    expect(await phone.closed).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
    await sleep(150)
    expect(next.messages).toEqual([])
    next.ws.close()
  })
})

describe("ordering", () => {
  it("carries 2000 frames each way in order, exactly once", async () => {
    const { binary, phone } = await pair()
    for (let i = 0; i < 2000; i++) phone.send(`{"seq":${i}}`)
    await binary.waitFor(2000, 15000)
    const seqs = envelopes(binary).map((e) => (e.frame as { seq: number }).seq)
    expect(seqs).toEqual(Array.from({ length: 2000 }, (_, i) => i))
    const connId = envelopes(binary)[0]!.conn_id as string
    for (let i = 0; i < 2000; i++) binary.send(`{"conn_id":"${connId}","frame":{"seq":${i}}}`)
    await phone.waitFor(2000, 15000)
    expect(phone.messages.map((m) => JSON.parse(m).seq)).toEqual(Array.from({ length: 2000 }, (_, i) => i))
    phone.ws.close()
    binary.ws.close()
  })

  it("without ws's native bufferutil (where it cannot load), 4 KiB frames still go through intact", async () => {
    // WS_NO_BUFFER_UTIL makes ws unmask and mask in JavaScript, as on a platform without a prebuilt.
    const plain = await startRelay([], { env: { WS_NO_BUFFER_UTIL: "1" } })
    try {
      const serverId = sid()
      const binary = await dialBinary(plain.url, serverId)
      const phone = await dialPhone(plain.url, serverId)
      const big = JSON.stringify({ pad: "é".repeat(2048) })
      for (let i = 0; i < 50; i++) phone.send(big)
      await binary.waitFor(50)
      expect(envelopes(binary).every((e) => JSON.stringify(e.frame) === big)).toBe(true)
      const connId = envelopes(binary)[0]!.conn_id as string
      for (let i = 0; i < 50; i++) binary.send(`{"conn_id":"${connId}","frame":${big}}`)
      await phone.waitFor(50)
      expect(phone.messages.every((m) => m === big)).toBe(true)
      phone.ws.close()
      binary.ws.close()
    } finally {
      await plain.stop()
    }
  })
})

describe("/healthz", () => {
  it("counts live binaries and registered phones; a binary in grace is not connected", async () => {
    // Earlier tests' peers are gone once their graces expired.
    await eventually(async () => {
      const h = await health()
      return h.connected_binaries === 0 && h.connected_phones === 0
    })
    const response = await fetch(`${relay.httpUrl}/healthz`, { method: "POST" })
    expect(response.status).toBe(200)
    expect(response.headers.get("content-type")).toBe("application/json; charset=utf-8")
    expect(response.headers.get("cache-control")).toBe("no-store")
    const text = await response.text()
    expect(text.length).toBeLessThan(200)
    expect(Object.keys(JSON.parse(text))).toEqual([
      "status",
      "version",
      "connected_binaries",
      "connected_phones",
      "uptime_seconds",
      // Cluster mode (these cases also run there, cluster-same-node.test.ts) adds the node's id last.
      ...(clusterRedisForTests() === undefined ? [] : ["node_id"])
    ])
    const { binary, phone, serverId } = await pair()
    const second = await dialPhone(relay.url, serverId)
    await eventually(async () => {
      const h = await health()
      return h.connected_binaries === 1 && h.connected_phones === 2
    })
    binary.ws.terminate()
    await eventually(async () => (await health()).connected_binaries === 0)
    expect((await health()).connected_phones).toBe(2)
    expect((await phone.closed).code).toBe(1000)
    expect((await second.closed).code).toBe(1000)
    await eventually(async () => (await health()).connected_phones === 0)
  })
})
