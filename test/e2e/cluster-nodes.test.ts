/**
 * Several relay processes on one real `redis-server` (CLUSTER.md §2), as far as cluster mode is
 * built (docs/cluster.md, "Status"): one holder per server-id across nodes, phones refused
 * plainly on a node that cannot relay to their binary yet, the drain that hands claims to grace
 * before closing, and Redis trouble (a 10 s stall, an empty restart) survived without a restart.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { type ClusterNode, clusterSum, startNodes } from "../support/ClusterNodes.ts"
import { closedWithin, dialBinary, dialPhone, envelopes, eventually, sleep, upgradeStatus } from "../support/Peers.ts"
import { metricValue } from "../support/ProxyClient.ts"
import { type RedisServer, redisServerBinary, startRedis, warnIfNoRedis } from "../support/RedisServer.ts"
import { killTracked } from "../support/RelayProcess.ts"

warnIfNoRedis("cluster-nodes.test.ts")

let n = 0
const sid = () => `cl-${process.pid}-${++n}`

const readyz = async (node: ClusterNode) => (await fetch(`${node.httpUrl}/readyz`)).status

describe.skipIf(redisServerBinary === undefined)("cluster: several nodes on one Redis", () => {
  let redis: RedisServer
  beforeAll(async () => {
    redis = await startRedis()
  })
  afterAll(async () => {
    await redis?.stop()
  })
  afterEach(() => killTracked())

  it("first claim wins across nodes: a second binary on another node gets 4409, counted there; the holder and its phones are untouched", async () => {
    const [a, b] = await startNodes(2, redis.url)
    const serverId = sid()
    const holder = await dialBinary(a!.url, serverId)
    const phone = await dialPhone(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_phones")) === 1)
    const newcomer = await dialBinary(b!.url, serverId)
    expect(await closedWithin(newcomer)).toEqual({ code: 4409, reason: "server-id already claimed" })
    expect(await metricValue(b!.metricsUrl, `pyrycode_relay_ws_upgrade_attempts_total{endpoint="server",outcome="reject_409"}`)).toBe(1)
    expect(await metricValue(b!.metricsUrl, `pyrycode_relay_register_failures_total{kind="server_in_use"}`)).toBe(1)
    phone.send(`{"still":"here"}`)
    await holder.waitFor(1)
    expect(holder.ws.readyState).toBe(holder.ws.OPEN)
    holder.ws.close()
    phone.ws.close()
  })

  it("a phone on a node other than its binary's is refused plainly (1013, not yet relayed); an unknown server-id is 4404 on any node", async () => {
    const [a, b] = await startNodes(2, redis.url)
    const serverId = sid()
    const binary = await dialBinary(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_binaries")) === 1)
    const elsewhere = await dialPhone(b!.url, serverId)
    expect(await closedWithin(elsewhere)).toEqual({ code: 1013, reason: "binary on another node" })
    const nobody = await dialPhone(b!.url, sid())
    expect(await closedWithin(nobody)).toEqual({ code: 4404, reason: "no server with that id" })
    expect(b!.logs.some((l) => l.includes(`"phone rejected"`) && l.includes(`"binary on another node"`))).toBe(true)
    binary.ws.close()
  })

  it("SIGTERM of a node hands its claims to grace before closing: the binary reconnecting on another node reclaims, counted once", async () => {
    const [a, b] = await startNodes(2, redis.url, ["--grace-period", "30s"])
    const serverId = sid()
    const binary = await dialBinary(a!.url, serverId)
    const phone = await dialPhone(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_phones")) === 1)
    const stopped = a!.stop("SIGTERM")
    expect(await binary.closed).toEqual({ code: 1001, reason: "shutting down" })
    expect(await phone.closed).toEqual({ code: 1001, reason: "shutting down" })
    const again = await dialBinary(b!.url, serverId)
    expect(await stopped).toBe(0)
    await sleep(200)
    expect(again.ws.readyState).toBe(again.ws.OPEN)
    expect(await metricValue(b!.metricsUrl, "pyrycode_relay_grace_reclaims_total")).toBe(1)
    const fresh = await dialPhone(b!.url, serverId)
    fresh.send("1")
    expect(envelopes(await again.waitFor(1).then(() => again))[0]!.frame).toBe(1)
    again.ws.close()
    fresh.ws.close()
  })

  it("kill -9 of the holder's node: once its lease lapsed, the binary reconnecting on another node takes over (counted once)", async () => {
    const [a, b] = await startNodes(2, redis.url, ["--lease-ttl", "3s"])
    const serverId = sid()
    const binary = await dialBinary(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_binaries")) === 1)
    a!.child.kill("SIGKILL")
    await binary.closed
    const killed = Date.now()
    // Until the lease lapses the holder's node counts as alive (4409); then the claim is taken over.
    let accepted: Awaited<ReturnType<typeof dialBinary>> | undefined
    while (accepted === undefined) {
      expect(Date.now() - killed).toBeLessThan(6_000)
      const attempt = await dialBinary(b!.url, serverId)
      const closed = await Promise.race([attempt.closed, sleep(300).then(() => undefined)])
      if (closed === undefined) accepted = attempt
      else expect(closed.code).toBe(4409)
    }
    expect(Date.now() - killed).toBeLessThan(3_000 + 1_500)
    // Taken over at once, or reclaimed if b's reaper had already put the dead node's claim in grace.
    expect(await clusterSum([b!], "pyrycode_relay_takeovers_total") + await clusterSum([b!], "pyrycode_relay_grace_reclaims_total")).toBe(1)
    const phone = await dialPhone(b!.url, serverId)
    phone.send("1")
    await accepted.waitFor(1)
    accepted.ws.close()
    phone.ws.close()
  }, 20_000)

  it("kill -9 of a node: within its lease its server-ids enter grace; unclaimed, the grace expires once in the cluster (phones elsewhere: not yet)", async () => {
    const [a, b, c] = await startNodes(3, redis.url, ["--lease-ttl", "3s", "--grace-period", "2s"])
    const serverId = sid()
    const binary = await dialBinary(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_binaries")) === 1)
    a!.child.kill("SIGKILL")
    await binary.closed
    const killed = Date.now()
    // Reaped within the lease (+ one reaper pass): the slot is in grace, held by nobody alive…
    await eventually(async () => (await redis.command("HGET", `${a!.prefix}:srv:{${serverId}}`, "state")).includes("grace"), 6_000)
    expect(Date.now() - killed).toBeLessThan(3_000 + 1_000 + 1_500)
    expect(b!.logs.concat(c!.logs).some((l) => l.includes(`"server released"`) && l.includes(`"node-a"`))).toBe(true)
    // …and expired after the grace, counted exactly once in the summed scrape of the survivors.
    await eventually(async () => (await clusterSum([b!, c!], "pyrycode_relay_grace_expiries_total")) === 1, 8_000)
    await sleep(2_500)
    expect(await clusterSum([b!, c!], "pyrycode_relay_grace_expiries_total")).toBe(1)
    expect(await clusterSum([b!, c!], "pyrycode_relay_takeovers_total")).toBe(0)
    const late = await dialPhone(b!.url, serverId)
    expect(await closedWithin(late)).toEqual({ code: 4404, reason: "no server with that id" })
  }, 30_000)

  it("a binary reclaiming on another node during grace: the old node's phones get 4404 within a second or two, not at its deadline", async () => {
    const [a, b] = await startNodes(2, redis.url, ["--grace-period", "30s"])
    const serverId = sid()
    const binary = await dialBinary(a!.url, serverId)
    const phone = await dialPhone(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_phones")) === 1)
    binary.ws.terminate()
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_binaries")) === 0)
    const returned = await dialBinary(b!.url, serverId)
    const reclaimed = Date.now()
    expect(await closedWithin(phone, 4_000)).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
    expect(Date.now() - reclaimed).toBeLessThan(3_000)
    expect(await clusterSum([a!, b!], "pyrycode_relay_grace_reclaims_total")).toBe(1)
    expect(await clusterSum([a!, b!], "pyrycode_relay_grace_expiries_total")).toBe(0)
    returned.ws.close()
  })

  it("fencing: a node paused past its lease (SIGSTOP) whose server-id was taken meanwhile closes its stale binary 1011 and phones 4404 on SIGCONT", async () => {
    const [a, b] = await startNodes(2, redis.url, ["--lease-ttl", "3s"])
    const serverId = sid()
    const stale = await dialBinary(a!.url, serverId)
    const stalePhone = await dialPhone(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_phones")) === 1)
    a!.child.kill("SIGSTOP")
    try {
      // The binary's daemon, cut off, dials the other node; once a's lease lapsed it takes over.
      let holder: Awaited<ReturnType<typeof dialBinary>> | undefined
      const paused = Date.now()
      while (holder === undefined) {
        expect(Date.now() - paused).toBeLessThan(8_000)
        const attempt = await dialBinary(b!.url, serverId)
        const closed = await Promise.race([attempt.closed, sleep(300).then(() => undefined)])
        if (closed === undefined) holder = attempt
      }
      expect(await clusterSum([b!], "pyrycode_relay_takeovers_total") + await clusterSum([b!], "pyrycode_relay_grace_reclaims_total")).toBe(1)
      a!.child.kill("SIGCONT")
      expect(await closedWithin(stale, 5_000)).toEqual({ code: 1011, reason: "heartbeat timeout" })
      expect(await closedWithin(stalePhone, 5_000)).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
      expect(a!.logs.some((l) => l.includes(`"node lease lapsed"`))).toBe(true)
      expect(a!.logs.some((l) => l.includes(`"claim lost"`))).toBe(true)
      // The new holder is untouched, and a's counters count nothing for it.
      expect(holder.ws.readyState).toBe(holder.ws.OPEN)
      expect(await clusterSum([a!], "pyrycode_relay_takeovers_total")).toBe(0)
      expect(await clusterSum([a!], "pyrycode_relay_grace_reclaims_total")).toBe(0)
      holder.ws.close()
    } finally {
      a!.child.kill("SIGCONT")
    }
  }, 30_000)

  it("redis-server stalled 10 s (SIGSTOP): same-node pairs keep working, new upgrades get 503; after SIGCONT everything resumes without a restart", async () => {
    const [a] = await startNodes(1, redis.url)
    const serverId = sid()
    const binary = await dialBinary(a!.url, serverId)
    const phone = await dialPhone(a!.url, serverId)
    phone.send(`"before"`)
    await binary.waitFor(1)
    const connId = envelopes(binary)[0]!.conn_id as string
    redis.pause()
    try {
      await eventually(async () => (await readyz(a!)) === 503, 5_000)
      for (let i = 0; i < 20; i++) phone.send(`{"during":${i}}`)
      await binary.waitFor(21)
      binary.send(`{"conn_id":"${connId}","frame":"reply"}`)
      await phone.waitFor(1)
      expect(await upgradeStatus(`${a!.url}/v1/server`, {
        "X-Pyrycode-Server": sid(),
        "X-Pyrycode-Version": "1",
        "User-Agent": "t"
      })).toBe(503)
      await sleep(6_000)
      expect(a!.child.exitCode).toBeNull()
      phone.send(`"still"`)
      await binary.waitFor(22)
    } finally {
      redis.resume()
    }
    await eventually(async () => (await readyz(a!)) === 200, 6_000)
    const other = await dialBinary(a!.url, sid())
    expect(other.ws.readyState).toBe(other.ws.OPEN)
    for (const peer of [binary, phone, other]) peer.ws.close()
  }, 40_000)

  it("redis-server restarted empty: every node re-asserts what it holds; a second claim still gets 4409 and phones still count", async () => {
    const [a, b] = await startNodes(2, redis.url, ["--lease-ttl", "3s"])
    const serverId = sid()
    const binary = await dialBinary(a!.url, serverId)
    const phones = await Promise.all(Array.from({ length: 16 }, () => dialPhone(a!.url, serverId)))
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_phones")) === 16)
    await redis.restartEmpty()
    // Each node finds its lease gone at once (a reconnect renews it) and states its claims…
    await eventually(async () => a!.logs.some((l) => l.includes(`"node lease lapsed"`)), 5_000)
    await eventually(async () => (await readyz(a!)) === 200 && (await readyz(b!)) === 200, 5_000)
    // …so the claim is back in Redis: another node cannot take the server-id, the cap holds.
    const newcomer = await dialBinary(b!.url, serverId)
    expect((await closedWithin(newcomer)).code).toBe(4409)
    const seventeenth = await dialPhone(a!.url, serverId)
    expect((await closedWithin(seventeenth)).code).toBe(4429)
    phones[0]!.send(`"after restart"`)
    await binary.waitFor(1)
    expect(await clusterSum([a!, b!], "pyrycode_relay_connected_phones")).toBe(16)
    for (const peer of [binary, ...phones]) peer.ws.close()
  }, 40_000)
})
