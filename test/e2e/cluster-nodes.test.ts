/**
 * Several relay processes on one real `redis-server` (CLUSTER.md §2), as far as cluster mode is
 * built (docs/cluster.md, "Status"): one holder per server-id across nodes, phones served on any
 * node (the cross-node cases are test/e2e/cluster-crossnode.test.ts), the drain that hands claims to grace
 * before closing, and Redis trouble (a 10 s stall, an empty restart) survived without a restart.
 */
import { afterEach, describe, expect, it } from "vitest"
import { type ClusterNode, clusterSum, startNodes } from "../support/ClusterNodes.ts"
import { closedWithin, dialBinary, dialPhone, envelopes, eventually, sleep, upgradeStatus } from "../support/Peers.ts"
import { metricValue } from "../support/ProxyClient.ts"
import { redisForSuite, redisServerBinary, warnIfNoRedis } from "../support/RedisServer.ts"
import { killTracked } from "../support/RelayProcess.ts"

warnIfNoRedis("cluster-nodes.test.ts")

let n = 0
const sid = () => `cl-${process.pid}-${++n}`

/** 101 when the upgrade succeeds (then closed at once), else the HTTP status. */
const statusOf = (url: string, headers: Record<string, string>) =>
  upgradeStatus(url, headers).catch((e: unknown) => {
    if (e instanceof Error && e.message === "upgrade unexpectedly succeeded") return 101
    throw e
  })

const readyz = async (node: ClusterNode) => (await fetch(`${node.httpUrl}/readyz`)).status

const accepted = async (node: ClusterNode) =>
  (await metricValue(node.metricsUrl, `pyrycode_relay_ws_upgrade_attempts_total{endpoint="server",outcome="accept"}`)) ?? 0

/**
 * Dials binaries on `node` again and again until that node accepts one as the holder, within
 * `timeoutMs` (one that is closed before it is accepted dials again).
 */
const redialUntilHeld = async (node: ClusterNode, serverId: string, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const before = await accepted(node)
    const attempt = await dialBinary(node.url, serverId)
    while (Date.now() < deadline && attempt.ws.readyState === attempt.ws.OPEN) {
      if ((await accepted(node)) > before) return attempt
      await sleep(50)
    }
  }
  throw new Error(`${node.nodeId} did not accept a binary for ${serverId} within ${timeoutMs} ms`)
}

describe.skipIf(redisServerBinary === undefined)("cluster: several nodes on one Redis", () => {
  const redis = redisForSuite()
  afterEach(() => killTracked())

  it("first claim wins across nodes: a second binary on another node gets 4409, counted there; the holder and its phones are untouched", async () => {
    const [a, b] = await startNodes(2, redis().url)
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

  it("a phone on a node other than its binary's is served, not refused; an unknown server-id is 4404 on any node", async () => {
    const [a, b] = await startNodes(2, redis().url)
    const serverId = sid()
    const binary = await dialBinary(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_binaries")) === 1)
    const elsewhere = await dialPhone(b!.url, serverId)
    elsewhere.send(`"across"`)
    await binary.waitFor(1)
    expect(envelopes(binary)[0]!.frame).toBe("across")
    expect(elsewhere.ws.readyState).toBe(elsewhere.ws.OPEN)
    const nobody = await dialPhone(b!.url, sid())
    expect(await closedWithin(nobody)).toEqual({ code: 4404, reason: "no server with that id" })
    elsewhere.ws.close()
    binary.ws.close()
  })

  it("SIGTERM of a node hands its claims to grace before closing: the binary reconnecting on another node reclaims, counted once", async () => {
    const [a, b] = await startNodes(2, redis().url, ["--grace-period", "30s"])
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

  it("kill -9 of the holder's node: a binary reconnecting on another node takes over within ~2 s (nobody on that node's inbox), never stuck on 4409", async () => {
    const [a, b] = await startNodes(2, redis().url)
    const serverId = sid()
    const binary = await dialBinary(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_binaries")) === 1)
    a!.child.kill("SIGKILL")
    await binary.closed
    const killed = Date.now()
    const returned = await redialUntilHeld(b!, serverId, 6_000)
    // Nobody on a's inbox for the reconnect allowance (2 s) while its lease still runs: gone.
    expect(Date.now() - killed).toBeLessThan(4_000)
    expect(await metricValue(b!.metricsUrl, "pyrycode_relay_takeovers_total")).toBe(1)
    expect(await metricValue(b!.metricsUrl, `pyrycode_relay_ws_upgrade_attempts_total{endpoint="server",outcome="reject_409"}`)).toBe(0)
    const phone = await dialPhone(b!.url, serverId)
    phone.send("1")
    await returned.waitFor(1)
    returned.ws.close()
    phone.ws.close()
  }, 20_000)

  it("the probe goes through the holder's node: a silent incumbent on A loses to a newcomer on B after --probe-timeout; A closes it 1011 and its phone 4404", async () => {
    const [a, b] = await startNodes(2, redis().url, ["--probe-timeout", "1s"])
    const serverId = sid()
    const silent = await dialBinary(a!.url, serverId, { wsOptions: { autoPong: false } })
    const phone = await dialPhone(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_phones")) === 1)
    const started = Date.now()
    const newcomer = await redialUntilHeld(b!, serverId, 5_000)
    // The holder's node pings for its share of the probe timeout (half of 1 s here).
    expect(Date.now() - started).toBeGreaterThanOrEqual(450)
    expect(await closedWithin(silent)).toEqual({ code: 1011, reason: "heartbeat timeout" })
    expect(await closedWithin(phone)).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
    expect(await clusterSum([a!, b!], "pyrycode_relay_takeovers_total")).toBe(1)
    expect(newcomer.ws.readyState).toBe(newcomer.ws.OPEN)
    expect(await metricValue(b!.metricsUrl, `pyrycode_relay_cluster_messages_total{direction="out"}`)).toBeGreaterThanOrEqual(2)
    expect(await metricValue(a!.metricsUrl, `pyrycode_relay_cluster_messages_total{direction="in"}`)).toBeGreaterThanOrEqual(2)
    newcomer.ws.close()
  }, 20_000)

  it("kill -9 of a node: within its lease its server-ids enter grace; unclaimed, the grace expires once in the cluster and its phones elsewhere get 1000", async () => {
    const [a, b, c] = await startNodes(3, redis().url, ["--lease-ttl", "3s", "--grace-period", "2s"])
    const serverId = sid()
    const binary = await dialBinary(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_binaries")) === 1)
    const elsewhere = [await dialPhone(b!.url, serverId), await dialPhone(c!.url, serverId)]
    await eventually(async () => (await clusterSum([b!, c!], "pyrycode_relay_connected_phones")) === 2)
    a!.child.kill("SIGKILL")
    await binary.closed
    const killed = Date.now()
    // Reaped within the lease (+ one reaper pass): the slot is in grace, held by nobody alive…
    await eventually(async () => (await redis().command("HGET", `${a!.prefix}:srv:{${serverId}}`, "state")).includes("grace"), 6_000)
    expect(Date.now() - killed).toBeLessThan(3_000 + 1_000 + 1_500)
    expect(b!.logs.concat(c!.logs).some((l) => l.includes(`"server released"`) && l.includes(`"node-a"`))).toBe(true)
    // …and expired after the grace, counted exactly once in the summed scrape of the survivors.
    await eventually(async () => (await clusterSum([b!, c!], "pyrycode_relay_grace_expiries_total")) === 1, 8_000)
    for (const phone of elsewhere) expect(await closedWithin(phone, 5_000)).toEqual({ code: 1000, reason: "" })
    await sleep(2_500)
    expect(await clusterSum([b!, c!], "pyrycode_relay_grace_expiries_total")).toBe(1)
    expect(await clusterSum([b!, c!], "pyrycode_relay_takeovers_total")).toBe(0)
    const late = await dialPhone(b!.url, serverId)
    expect(await closedWithin(late)).toEqual({ code: 4404, reason: "no server with that id" })
  }, 30_000)

  it("a binary reclaiming on another node during grace: the old node's phones get 4404 within a second or two, not at its deadline", async () => {
    const [a, b] = await startNodes(2, redis().url, ["--grace-period", "30s"])
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

  it("fencing: a node paused (SIGSTOP) whose server-id was taken meanwhile closes its stale binary 1011 and phone 4404 on SIGCONT", async () => {
    const [a, b] = await startNodes(2, redis().url, ["--lease-ttl", "3s", "--probe-timeout", "1s"])
    const serverId = sid()
    const stale = await dialBinary(a!.url, serverId)
    const stalePhone = await dialPhone(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_phones")) === 1)
    a!.child.kill("SIGSTOP")
    try {
      // The binary's daemon, cut off, dials the other node: a's node cannot answer the probe.
      const holder = await redialUntilHeld(b!, serverId, 8_000)
      expect(await clusterSum([b!], "pyrycode_relay_takeovers_total") + await clusterSum([b!], "pyrycode_relay_grace_reclaims_total")).toBe(1)
      // Past the lease too: a learns it both from the plane and from its renewal.
      await sleep(3_500)
      a!.child.kill("SIGCONT")
      expect(await closedWithin(stale, 5_000)).toEqual({ code: 1011, reason: "heartbeat timeout" })
      expect(await closedWithin(stalePhone, 5_000)).toEqual({ code: 4404, reason: "binary reclaimed server-id" })
      await eventually(() => a!.logs.some((l) => l.includes(`"claim lost"`)))
      // The new holder is untouched, and a counts nothing for it.
      expect(holder.ws.readyState).toBe(holder.ws.OPEN)
      expect(await clusterSum([a!], "pyrycode_relay_takeovers_total")).toBe(0)
      expect(await clusterSum([a!], "pyrycode_relay_grace_reclaims_total")).toBe(0)
      holder.ws.close()
    } finally {
      a!.child.kill("SIGCONT")
    }
  }, 30_000)

  it("the per-IP upgrade rate limit is one bucket for the whole cluster: a burst spent on A is spent on B", async () => {
    const [a, b] = await startNodes(2, redis().url, ["--rate-limit-burst", "3", "--rate-limit-refill", "2s"])
    const phone = { "X-Pyrycode-Server": sid(), "X-Pyrycode-Token": "t", "User-Agent": "t" }
    for (let i = 0; i < 3; i++) expect(await statusOf(`${a!.url}/v1/client`, phone)).toBe(101)
    expect(await statusOf(`${b!.url}/v1/client`, phone)).toBe(429)
    expect(await statusOf(`${a!.url}/v1/client`, phone)).toBe(429)
    expect(await metricValue(b!.metricsUrl, `pyrycode_relay_ws_upgrade_attempts_total{endpoint="client",outcome="reject_rate_limit"}`)).toBe(1)
    // One token back per refill period, for the whole cluster.
    await sleep(2_100)
    expect(await statusOf(`${b!.url}/v1/client`, phone)).toBe(101)
    expect(await statusOf(`${a!.url}/v1/client`, phone)).toBe(429)
  })

  it("redis-server stalled 10 s (SIGSTOP): same-node pairs keep working, new upgrades get 503; after SIGCONT everything resumes without a restart", async () => {
    const [a] = await startNodes(1, redis().url)
    const serverId = sid()
    const binary = await dialBinary(a!.url, serverId)
    const phone = await dialPhone(a!.url, serverId)
    phone.send(`"before"`)
    await binary.waitFor(1)
    const connId = envelopes(binary)[0]!.conn_id as string
    redis().pause()
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
      redis().resume()
    }
    await eventually(async () => (await readyz(a!)) === 200, 6_000)
    const other = await dialBinary(a!.url, sid())
    expect(other.ws.readyState).toBe(other.ws.OPEN)
    for (const peer of [binary, phone, other]) peer.ws.close()
  }, 40_000)

  it("redis-server restarted empty: every node re-asserts what it holds (its phones of other nodes' claims too); a second claim still gets 4409 and phones still count", async () => {
    const [a, b] = await startNodes(2, redis().url, ["--lease-ttl", "3s"])
    const serverId = sid()
    const binary = await dialBinary(a!.url, serverId)
    await eventually(async () => (await clusterSum([a!], "pyrycode_relay_connected_binaries")) === 1)
    const phones = await Promise.all(Array.from({ length: 15 }, () => dialPhone(a!.url, serverId)))
    phones.push(await dialPhone(b!.url, serverId))
    await eventually(async () => (await clusterSum([a!, b!], "pyrycode_relay_connected_phones")) === 16)
    await redis().restartEmpty()
    // Each node finds its lease gone at once (a reconnect renews it) and states its claims…
    await eventually(async () => a!.logs.some((l) => l.includes(`"node lease lapsed"`)), 5_000)
    await eventually(async () => (await readyz(a!)) === 200 && (await readyz(b!)) === 200, 5_000)
    // …so the claim is back in Redis: another node cannot take the server-id, the cap holds.
    const newcomer = await dialBinary(b!.url, serverId)
    expect((await closedWithin(newcomer)).code).toBe(4409)
    // b registers its phone again at its next check once a's claim is back (within a second or two).
    await sleep(2_500)
    const seventeenth = await dialPhone(a!.url, serverId)
    expect((await closedWithin(seventeenth)).code).toBe(4429)
    phones[0]!.send(`"after restart"`)
    phones[15]!.send(`"after restart, across"`)
    await binary.waitFor(2)
    expect(await clusterSum([a!, b!], "pyrycode_relay_connected_phones")).toBe(16)
    for (const peer of [binary, ...phones]) peer.ws.close()
  }, 40_000)
})
