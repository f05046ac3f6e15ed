/**
 * Frames cross nodes (CLUSTER.md §2.2–2.7) with real relay processes on a real `redis-server`: a
 * phone on one node, its binary on another — frames both ways in order and byte for byte, close
 * directives and close notices, the end of a claim reaching phones on every node, the cap across
 * nodes, backpressure across nodes, and fencing: no phone ever hears two binaries.
 */
import WebSocket from "ws"
import { afterEach, describe, expect, it } from "vitest"
import { type ClusterNode, clusterSum, startNodes } from "../support/ClusterNodes.ts"
import { closedWithin, dialBinary, dialPhone, envelopes, eventually, type Peer, sleep } from "../support/Peers.ts"
import { metricValue } from "../support/ProxyClient.ts"
import { redisForSuite, redisServerBinary, warnIfNoRedis } from "../support/RedisServer.ts"
import { killTracked } from "../support/RelayProcess.ts"

warnIfNoRedis("cluster-crossnode.test.ts")

let n = 0
const sid = () => `cx-${process.pid}-${++n}`

const forwarded = (direction: "phone_to_binary" | "binary_to_phone") =>
  `pyrycode_relay_frames_forwarded_total{direction="${direction}"}`

/**
 * Dials one binary on `node` and returns it once that node counts it connected: it holds its
 * claim (phones dialled elsewhere find it). One dial: a refused binary fails the wait.
 */
const dialHolder = async (node: ClusterNode, serverId: string, options?: Parameters<typeof dialBinary>[2]) => {
  const before = (await metricValue(node.metricsUrl, "pyrycode_relay_connected_binaries")) ?? 0
  const binary = await dialBinary(node.url, serverId, options)
  await eventually(async () => ((await metricValue(node.metricsUrl, "pyrycode_relay_connected_binaries")) ?? 0) > before)
  return binary
}

/** The conn_id the binary learns from a phone's first frame. */
const connIdOf = async (binary: Awaited<ReturnType<typeof dialBinary>>, index: number) => {
  await binary.waitFor(index + 1)
  return envelopes(binary)[index]!.conn_id as string
}

describe.skipIf(redisServerBinary === undefined)("cluster: frames cross nodes", () => {
  const redis = redisForSuite()
  afterEach(() => killTracked())

  it("phone on A, binary on B: frames both ways in order, byte-exact (text and binary opcodes), counted once by the writing node", async () => {
    const [a, b] = await startNodes(2, redis().url)
    const serverId = sid()
    const binary = await dialHolder(b!, serverId)
    const phone = await dialPhone(a!.url, serverId)
    // Numbers and escapes a re-serialiser would change; one sent with the binary opcode.
    const sent = Array.from({ length: 60 }, (_, i) => `{"i":${i},"n":1.50e+2,"s":"\\u00e9\\/","pad":"${"x".repeat(i * 37)}"}`)
    for (const [i, frame] of sent.entries()) phone.ws.send(i === 7 ? Buffer.from(frame) : frame, { binary: i === 7 })
    await binary.waitFor(sent.length)
    const connId = envelopes(binary)[0]!.conn_id as string
    expect(binary.messages).toEqual(sent.map((f) => `{"conn_id":"${connId}","frame":${f}}`))
    const replies = Array.from({ length: 60 }, (_, i) => `[${i},  1e3, "\\ud83d\\ude00"]`)
    for (const r of replies) binary.send(`{"frame":${r},"conn_id":"${connId}"}`)
    await phone.waitFor(replies.length)
    expect(phone.messages).toEqual(replies)
    expect(phone.binaryFlags.every((isBinary) => !isBinary)).toBe(true)
    // Counted by the node that wrote each frame to its sink, once in the cluster.
    await eventually(async () => (await metricValue(a!.metricsUrl, forwarded("binary_to_phone"))) === 60)
    expect(await metricValue(b!.metricsUrl, forwarded("phone_to_binary"))).toBe(60)
    expect(await metricValue(a!.metricsUrl, forwarded("phone_to_binary"))).toBe(0)
    expect(await metricValue(b!.metricsUrl, forwarded("binary_to_phone"))).toBe(0)
    expect(await clusterSum([a!, b!], "pyrycode_relay_connected_phones")).toBe(1)
    phone.ws.close()
    binary.ws.close()
  })

  it("a close directive crosses nodes after the frames before it; a phone elsewhere leaving on its own gives its binary the close notice", async () => {
    const [a, b] = await startNodes(2, redis().url)
    const serverId = sid()
    const binary = await dialHolder(b!, serverId)
    const directed = await dialPhone(a!.url, serverId)
    const leaving = await dialPhone(a!.url, serverId)
    directed.send(`"d"`)
    const directedId = await connIdOf(binary, 0)
    leaving.send(`"l"`)
    const leavingId = await connIdOf(binary, 1)
    binary.send(`{"conn_id":"${directedId}","frame":"one"}`)
    binary.send(`{"conn_id":"${directedId}","frame":"two","close_code":4000}`)
    binary.send(`{"conn_id":"${directedId}","frame":"refused"}`)
    expect(await closedWithin(directed)).toEqual({ code: 4000, reason: "" })
    expect(directed.messages).toEqual([`"one"`, `"two"`])
    leaving.send(`"last"`)
    leaving.ws.close(4001)
    await binary.waitFor(4)
    expect(binary.messages.slice(2)).toEqual([
      `{"conn_id":"${leavingId}","frame":"last"}`,
      `{"conn_id":"${leavingId}","close_code":4001}`
    ])
    // No notice for the phone the binary closed itself.
    await sleep(300)
    expect(binary.messages.length).toBe(4)
    await eventually(async () => (await clusterSum([a!, b!], "pyrycode_relay_connected_phones")) === 0)
    binary.ws.close()
  })

  it("reclaim on another node during grace: phones on every other node get 4404, counted once", async () => {
    const [a, b, c] = await startNodes(3, redis().url, ["--grace-period", "30s"])
    const serverId = sid()
    const binary = await dialHolder(b!, serverId)
    const onA = await dialPhone(a!.url, serverId)
    const onB = await dialPhone(b!.url, serverId)
    await eventually(async () => (await clusterSum([a!, b!], "pyrycode_relay_connected_phones")) === 2)
    binary.ws.terminate()
    await eventually(async () => (await clusterSum([b!], "pyrycode_relay_connected_binaries")) === 0)
    const returned = await dialBinary(c!.url, serverId)
    const started = Date.now()
    for (const phone of [onA, onB]) expect(await closedWithin(phone, 3_000)).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
    expect(Date.now() - started).toBeLessThan(2_000)
    expect(await clusterSum([a!, b!, c!], "pyrycode_relay_grace_reclaims_total")).toBe(1)
    // A phone dialling a now reaches the new binary on c.
    const fresh = await dialPhone(a!.url, serverId)
    fresh.send(`"new"`)
    await returned.waitFor(1)
    expect(envelopes(returned)[0]!.frame).toBe("new")
    returned.ws.close()
    fresh.ws.close()
  })

  it("grace expiry with phones on three nodes: each closed 1000; grace_expiries_total exactly once in the summed scrape", async () => {
    const [a, b, c] = await startNodes(3, redis().url, ["--grace-period", "2s"])
    const serverId = sid()
    const binary = await dialHolder(a!, serverId)
    const phones = [await dialPhone(a!.url, serverId), await dialPhone(b!.url, serverId), await dialPhone(c!.url, serverId)]
    await eventually(async () => (await clusterSum([a!, b!, c!], "pyrycode_relay_connected_phones")) === 3)
    binary.ws.terminate()
    for (const phone of phones) expect(await closedWithin(phone, 6_000)).toEqual({ code: 1000, reason: "" })
    await sleep(3_000)
    expect(await clusterSum([a!, b!, c!], "pyrycode_relay_grace_expiries_total")).toBe(1)
    expect(await clusterSum([a!, b!, c!], "pyrycode_relay_connected_phones")).toBe(0)
  }, 20_000)

  it("the phone cap holds across nodes, exactly", async () => {
    const [a, b, c] = await startNodes(3, redis().url, ["--max-phones-per-server", "3"])
    const serverId = sid()
    const binary = await dialHolder(a!, serverId)
    const phones = [await dialPhone(a!.url, serverId), await dialPhone(b!.url, serverId), await dialPhone(c!.url, serverId)]
    // Registration follows the upgrade: all three are in before the fourth dials.
    await eventually(async () => (await clusterSum([a!, b!, c!], "pyrycode_relay_connected_phones")) === 3)
    const fourth = await dialPhone(b!.url, serverId)
    expect(await closedWithin(fourth)).toEqual({ code: 4429, reason: "too many phones for server-id" })
    phones[2]!.ws.close()
    await eventually(async () => (await clusterSum([a!, b!, c!], "pyrycode_relay_connected_phones")) === 2)
    const again = await dialPhone(b!.url, serverId)
    again.send(`"in"`)
    await binary.waitFor(1)
    for (const peer of [binary, again, phones[0]!, phones[1]!]) peer.ws.close()
  })

  it("a stalled phone on A delays neither its sibling on A nor the binary on B; it alone is closed 1011 phone backlog full", async () => {
    const [a, b] = await startNodes(2, redis().url, ["--phone-outbox-bytes", "400000", "--write-timeout", "60s"])
    const serverId = sid()
    const binary = await dialHolder(b!, serverId, { wsOptions: { perMessageDeflate: false } })
    const stalled = await dialPhone(a!.url, serverId, { wsOptions: { perMessageDeflate: false } })
    const sibling = await dialPhone(a!.url, serverId)
    stalled.send(`"s"`)
    const stalledId = await connIdOf(binary, 0)
    sibling.send(`"t"`)
    const siblingId = await connIdOf(binary, 1)
    ;(stalled.ws as unknown as { _socket: { pause: () => void } })._socket.pause()
    const big = `"${"y".repeat(100_000)}"`
    for (let i = 0; i < 200; i++) binary.send(`{"conn_id":"${stalledId}","frame":${big}}`)
    const started = Date.now()
    for (let i = 0; i < 20; i++) binary.send(`{"conn_id":"${siblingId}","frame":${i}}`)
    await sibling.waitFor(20)
    expect(Date.now() - started).toBeLessThan(2_000)
    sibling.send(`"still"`)
    await binary.waitFor(3)
    ;(stalled.ws as unknown as { _socket: { resume: () => void } })._socket.resume()
    expect(await closedWithin(stalled, 10_000)).toEqual({ code: 1011, reason: "phone backlog full" })
    expect(sibling.ws.readyState).toBe(WebSocket.OPEN)
    expect(binary.ws.readyState).toBe(WebSocket.OPEN)
    sibling.ws.close()
    binary.ws.close()
  }, 30_000)

  it("the binary on B stops reading: the flooding phone on A is closed 1011 binary backlog full, counted on B; the binary stays", async () => {
    const [a, b] = await startNodes(2, redis().url, ["--phone-outbox-bytes", "400000", "--write-timeout", "60s"])
    const serverId = sid()
    const binary = await dialHolder(b!, serverId, { wsOptions: { perMessageDeflate: false } })
    const phone = await dialPhone(a!.url, serverId, { wsOptions: { perMessageDeflate: false } })
    phone.send(`"hello"`)
    await binary.waitFor(1)
    ;(binary.ws as unknown as { _socket: { pause: () => void } })._socket.pause()
    const big = `"${"z".repeat(100_000)}"`
    for (let i = 0; i < 400 && phone.ws.readyState === WebSocket.OPEN; i++) {
      phone.send(big)
      await sleep(1)
    }
    expect(await closedWithin(phone, 10_000)).toEqual({ code: 1011, reason: "binary backlog full" })
    const dropped = `pyrycode_relay_frames_dropped_total{direction="phone_to_binary",reason="binary_write_failed"}`
    expect(await metricValue(b!.metricsUrl, dropped)).toBeGreaterThan(0)
    expect(binary.ws.readyState).toBe(WebSocket.OPEN)
    binary.ws.terminate()
  }, 30_000)

  it("fencing: the binary's node paused (SIGSTOP) past its lease while the binary moves; on SIGCONT no phone hears two binaries", async () => {
    const [a, b, c] = await startNodes(3, redis().url, ["--lease-ttl", "3s", "--probe-timeout", "1s"])
    const serverId = sid()
    const stale = await dialHolder(b!, serverId)
    const early = await dialPhone(a!.url, serverId)
    early.send(`"early"`)
    const earlyId = await connIdOf(stale, 0)
    b!.child.kill("SIGSTOP")
    try {
      // The stale binary keeps writing to the phone it knows: b reads it only once resumed.
      for (let i = 0; i < 20; i++) stale.send(`{"conn_id":"${earlyId}","frame":"stale-${i}"}`)
      let holder: Awaited<ReturnType<typeof dialBinary>> | undefined
      const deadline = Date.now() + 10_000
      while (holder === undefined && Date.now() < deadline) {
        const attempt = await dialBinary(c!.url, serverId)
        const closed = await Promise.race([attempt.closed, sleep(2_500).then(() => undefined)])
        if (closed === undefined) holder = attempt
      }
      expect(holder).toBeDefined()
      // The takeover reaches the phone on a (b is paused: c tells a itself).
      expect(await closedWithin(early, 4_000)).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
      expect(early.messages).toEqual([])
      const late = await dialPhone(a!.url, serverId)
      late.send(`"late"`)
      const lateId = await connIdOf(holder!, 0)
      for (let i = 0; i < 20; i++) stale.send(`{"conn_id":"${lateId}","frame":"stale-late-${i}"}`)
      await sleep(3_500)
      b!.child.kill("SIGCONT")
      holder!.send(`{"conn_id":"${lateId}","frame":"fresh"}`)
      await late.waitFor(1)
      expect(await closedWithin(stale, 6_000)).toEqual({ code: 1011, reason: "heartbeat timeout" })
      await sleep(1_000)
      expect(late.messages).toEqual([`"fresh"`])
      const staleDrops = await metricValue(a!.metricsUrl, `pyrycode_relay_cluster_frames_dropped_total{reason="stale_epoch"}`)
      console.log(JSON.stringify({ case: "fencing", staleEpochDropsOnA: staleDrops }))
      holder!.ws.close()
      late.ws.close()
    } finally {
      b!.child.kill("SIGCONT")
    }
  }, 40_000)

  it("redis-server stalled: frames between nodes are dropped and counted redis_down; a pair on one node keeps working; after SIGCONT frames cross again", async () => {
    const [a, b] = await startNodes(2, redis().url)
    const serverId = sid()
    const binary = await dialHolder(b!, serverId)
    const far = await dialPhone(a!.url, serverId)
    const near = await dialPhone(b!.url, serverId)
    far.send(`"far"`)
    near.send(`"near"`)
    await binary.waitFor(2)
    redis().pause()
    try {
      for (let i = 0; i < 5; i++) far.send(`{"lost":${i}}`)
      const redisDown = `pyrycode_relay_cluster_frames_dropped_total{reason="redis_down"}`
      await eventually(async () => ((await metricValue(a!.metricsUrl, redisDown)) ?? 0) > 0, 6_000)
      near.send(`"still near"`)
      await binary.waitFor(3)
      expect(binary.messages.slice(2).map((m) => JSON.parse(m).frame)).toEqual(["still near"])
    } finally {
      redis().resume()
    }
    await eventually(async () => (await fetch(`${a!.httpUrl}/readyz`)).status === 200, 8_000)
    far.send(`"again"`)
    await eventually(() => binary.messages.some((m) => m.includes(`"again"`)), 5_000)
    for (const peer of [binary, far, near]) peer.ws.close()
  }, 40_000)

  it("SIGTERM of the binary's node: the binary reclaims on another node, the phone on a third node gets 4404, counted once", async () => {
    const [a, b, c] = await startNodes(3, redis().url, ["--grace-period", "30s"])
    const serverId = sid()
    const binary = await dialHolder(a!, serverId)
    const phone = await dialPhone(c!.url, serverId)
    phone.send(`"before"`)
    await binary.waitFor(1)
    const stopped = a!.stop("SIGTERM")
    expect(await binary.closed).toEqual({ code: 1001, reason: "shutting down" })
    const again = await dialBinary(b!.url, serverId)
    expect(await closedWithin(phone, 4_000)).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
    expect(await stopped).toBe(0)
    expect(await clusterSum([b!, c!], "pyrycode_relay_grace_reclaims_total")).toBe(1)
    again.ws.close()
  }, 20_000)

  it("SIGTERM of one node under load: every frame that arrived arrived once and in order, its binaries reclaim elsewhere (never 4409), the other node's own pair never stops", async () => {
    const [a, b] = await startNodes(2, redis().url, ["--grace-period", "30s"])
    // Four server-ids held on A, each with a phone on A and a phone on B; one pair wholly on B.
    const ids = [sid(), sid(), sid(), sid()]
    const binaries = await Promise.all(ids.map((id) => dialHolder(a!, id)))
    // Each binary echoes every frame back to the phone it came from.
    for (const binary of binaries) {
      binary.ws.on("message", (data: Buffer) => {
        const e = JSON.parse(data.toString()) as { conn_id: string; frame?: unknown }
        if (e.frame !== undefined && binary.ws.readyState === binary.ws.OPEN) binary.ws.send(JSON.stringify({ conn_id: e.conn_id, frame: e.frame }))
      })
    }
    const phones = (await Promise.all(ids.flatMap((id) => [dialPhone(a!.url, id), dialPhone(b!.url, id)])))
    const ownId = sid()
    const ownBinary = await dialHolder(b!, ownId)
    const ownPhone = await dialPhone(b!.url, ownId)
    // Load: every phone sends a numbered frame every 2 ms until its socket closes.
    let sending = true
    const sent = new Map<Peer, number>()
    const pump = async (peer: Peer) => {
      let i = 0
      while (sending && peer.ws.readyState === peer.ws.OPEN) {
        peer.ws.send(`${i++}`)
        sent.set(peer, i)
        await sleep(2)
      }
    }
    const pumps = [...phones, ownPhone].map(pump)
    await sleep(700)
    const stopped = a!.stop("SIGTERM")
    // The drain: the binaries on A are closed 1001 and come back on B, which reclaims their graces.
    for (const binary of binaries) expect(await closedWithin(binary, 10_000)).toEqual({ code: 1001, reason: "shutting down" })
    const returned = await Promise.all(ids.map((id) => dialBinary(b!.url, id)))
    expect(await stopped).toBe(0)
    // Phones on A: 1001 (the drain). Phones on B: 4404 when their binary reclaims, or — as they keep
    // sending — 1000 for a frame sent while it was in grace (SPEC §3.4); never 1011.
    const closes = await Promise.all(phones.map((phone) => closedWithin(phone, 10_000)))
    for (const [i, close] of closes.entries()) expect(i % 2 === 0 ? [1001] : [1000, 4404]).toContain(close.code)
    await sleep(300)
    for (const binary of returned) expect(binary.ws.readyState).toBe(binary.ws.OPEN)
    expect(await clusterSum([b!], "pyrycode_relay_grace_reclaims_total")).toBe(ids.length)
    expect(await metricValue(b!.metricsUrl, `pyrycode_relay_ws_upgrade_attempts_total{endpoint="server",outcome="reject_409"}`)).toBe(0)
    // Whatever each phone got back is 0, 1, 2, … with no gap, no repeat, no reordering.
    for (const phone of phones) {
      const echoed = phone.messages.map(Number)
      expect(echoed.length).toBeGreaterThan(10)
      expect(echoed).toEqual(echoed.map((_, i) => i))
    }
    // The pair on B never stopped: all it sent reached its binary, in order.
    sending = false
    await Promise.all(pumps)
    const ownSent = sent.get(ownPhone)!
    await ownBinary.waitFor(ownSent, 5_000)
    expect(envelopes(ownBinary).map((e) => Number(e.frame))).toEqual(Array.from({ length: ownSent }, (_, i) => i))
    expect(ownPhone.ws.readyState).toBe(ownPhone.ws.OPEN)
    for (const peer of [...returned, ownBinary, ownPhone]) peer.ws.close()
  }, 40_000)

  it("kill -9 of a phone's node: within its lease the binary elsewhere gets the phone's close notice (1001) and its cap place is free again", async () => {
    const [a, b, c] = await startNodes(3, redis().url, ["--lease-ttl", "3s", "--max-phones-per-server", "1"])
    const serverId = sid()
    const binary = await dialHolder(b!, serverId)
    const doomed = await dialPhone(a!.url, serverId)
    doomed.send(`"here"`)
    const doomedId = await connIdOf(binary, 0)
    const refused = await dialPhone(c!.url, serverId)
    expect(await closedWithin(refused)).toEqual({ code: 4429, reason: "too many phones for server-id" })
    a!.child.kill("SIGKILL")
    const killed = Date.now()
    await binary.waitFor(2, 8_000)
    expect(binary.messages[1]).toBe(`{"conn_id":"${doomedId}","close_code":1001}`)
    expect(Date.now() - killed).toBeLessThan(3_000 + 1_000 + 1_500)
    const next = await dialPhone(c!.url, serverId)
    next.send(`"next"`)
    await binary.waitFor(3)
    expect(envelopes(binary)[2]!.frame).toBe("next")
    for (const peer of [binary, next]) peer.ws.close()
  }, 30_000)
})
