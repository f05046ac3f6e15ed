/**
 * Three relay nodes behind a real HAProxy (Debian `haproxy`) configured as docs/cluster.md says:
 * HTTP mode, `balance hdr(X-Pyrycode-Server)` with consistent hashing, `/readyz` checks. Every
 * pair relays both ways through it, server-ids spread over the nodes, and when one node drains,
 * its binaries return through HAProxy to another node and reclaim (no 4409).
 *
 * And in round-robin (CLUSTER.md §5): a binary and its phones land on different nodes, and every
 * pair still relays both ways, in order.
 */
import { afterEach, describe, expect, it } from "vitest"
import { clusterSum, startNodes } from "../support/ClusterNodes.ts"
import { type HaProxy, haproxyBinary, startHaProxyByServerId, startHaProxyRoundRobin } from "../support/HaProxy.ts"
import { dialBinary, dialPhone, envelopes, eventually, type Peer, sleep } from "../support/Peers.ts"
import { metricValue } from "../support/ProxyClient.ts"
import { redisForSuite, redisServerBinary, warnIfNoRedis } from "../support/RedisServer.ts"
import { killTracked } from "../support/RelayProcess.ts"

warnIfNoRedis("cluster-haproxy.test.ts")
if (haproxyBinary === undefined) {
  console.warn("cluster-haproxy.test.ts: SKIPPED — `haproxy` not found on PATH or in /usr/sbin (install the Debian package `haproxy`)")
}

/** A binary that keeps dialling until it holds its server-id (HAProxy may still route to a draining node). */
const holdingBinary = async (url: string, serverId: string): Promise<Peer> => {
  for (let attempt = 0; attempt < 40; attempt++) {
    const binary = await dialBinary(url, serverId).catch(() => undefined)
    if (binary !== undefined) {
      const closed = await Promise.race([binary.closed, sleep(400).then(() => undefined)])
      if (closed === undefined) return binary
    }
    await sleep(250)
  }
  throw new Error(`could not hold ${serverId}`)
}

describe.skipIf(redisServerBinary === undefined || haproxyBinary === undefined)("three nodes behind HAProxy (hash on X-Pyrycode-Server)", () => {
  let haproxy: HaProxy | undefined
  const redis = redisForSuite()
  afterEach(async () => {
    await haproxy?.stop()
    killTracked()
  })

  it("pairs relay through HAProxy on every node; a drained node's binaries return elsewhere and reclaim", async () => {
    const nodes = await startNodes(3, redis().url, ["--grace-period", "30s"])
    haproxy = await startHaProxyByServerId(nodes.map((n) => n.port))
    const url = `ws://127.0.0.1:${haproxy.port}`
    const ids = Array.from({ length: 12 }, (_, i) => `hap-${process.pid}-${i}`)
    const pairs: Array<{ serverId: string; binary: Peer; phone: Peer }> = []
    for (const serverId of ids) {
      const binary = await holdingBinary(url, serverId)
      const phone = await dialPhone(url, serverId)
      phone.send(`{"from":"${serverId}"}`)
      await binary.waitFor(1)
      const connId = envelopes(binary)[0]!.conn_id as string
      binary.send(`{"conn_id":"${connId}","frame":"back"}`)
      await phone.waitFor(1)
      pairs.push({ serverId, binary, phone })
    }
    expect(await clusterSum(nodes, "pyrycode_relay_connected_binaries")).toBe(12)
    const perNode = await Promise.all(nodes.map((n) => metricValue(n.metricsUrl, "pyrycode_relay_connected_binaries")))
    expect(perNode.filter((count) => (count ?? 0) > 0).length).toBeGreaterThanOrEqual(2)

    // Drain the busiest node; its binaries come back through HAProxy to the others and reclaim.
    const busiest = perNode.indexOf(Math.max(...perNode.map((c) => c ?? 0)))
    const drained = nodes[busiest]!
    const moved = pairs.filter((p) => drained.logs.some((l) => l.includes(`"server claimed"`) && l.includes(`"${p.serverId}"`)))
    expect(moved.length).toBe(perNode[busiest])
    expect(await drained.stop("SIGTERM")).toBe(0)
    for (const p of moved) expect((await p.binary.closed).code).toBe(1001)
    const others = nodes.filter((_, i) => i !== busiest)
    for (const p of moved) {
      const binary = await holdingBinary(url, p.serverId)
      const phone = await dialPhone(url, p.serverId)
      phone.send(`"again"`)
      await binary.waitFor(1)
      binary.ws.close()
      phone.ws.close()
    }
    await eventually(async () => (await clusterSum(others, "pyrycode_relay_grace_reclaims_total")) === moved.length)
    expect(await clusterSum(others, "pyrycode_relay_takeovers_total")).toBe(0)
    for (const p of pairs) {
      p.binary.ws.close()
      p.phone.ws.close()
    }
  }, 60_000)

  it("round-robin: binaries and phones spread over the nodes, pairs crossing nodes relay both ways in order", async () => {
    const nodes = await startNodes(3, redis().url)
    haproxy = await startHaProxyRoundRobin(nodes.map((n) => n.port))
    const url = `ws://127.0.0.1:${haproxy.port}`
    const pairs: Array<{ binary: Peer; phones: Array<Peer> }> = []
    for (let i = 0; i < 4; i++) {
      const serverId = `rr-${process.pid}-${i}`
      const binary = await holdingBinary(url, serverId)
      await eventually(async () => (await clusterSum(nodes, "pyrycode_relay_connected_binaries")) === i + 1)
      const phones = [await dialPhone(url, serverId), await dialPhone(url, serverId)]
      pairs.push({ binary, phones })
    }
    // Round-robin spreads the connections: phones on more than one node, and (dialled in turn
    // with their binaries) never all on their binary's.
    await eventually(async () => (await clusterSum(nodes, "pyrycode_relay_connected_phones")) === 8)
    const phonesOn = await Promise.all(nodes.map(async (n) => (await metricValue(n.metricsUrl, "pyrycode_relay_connected_phones")) ?? 0))
    expect(phonesOn.filter((count) => count > 0).length).toBeGreaterThan(1)
    expect(phonesOn.reduce((x, y) => x + y, 0)).toBe(8)
    for (const { binary, phones } of pairs) {
      for (const [p, phone] of phones.entries()) for (let k = 0; k < 10; k++) phone.send(`{"p":${p},"k":${k}}`)
      await binary.waitFor(20)
      for (const [p, phone] of phones.entries()) {
        const mine = envelopes(binary).filter((e) => (e.frame as { p: number }).p === p)
        expect(mine.map((e) => (e.frame as { k: number }).k)).toEqual(Array.from({ length: 10 }, (_, k) => k))
        const connId = mine[0]!.conn_id as string
        for (let k = 0; k < 10; k++) binary.send(`{"conn_id":"${connId}","frame":${k}}`)
        await phone.waitFor(10)
        expect(phone.messages).toEqual(Array.from({ length: 10 }, (_, k) => `${k}`))
      }
    }
    expect(await clusterSum(nodes, `pyrycode_relay_cluster_messages_total{direction="in"}`)).toBeGreaterThan(0)
    for (const { binary, phones } of pairs) for (const peer of [binary, ...phones]) peer.ws.close()
  }, 40_000)
})
