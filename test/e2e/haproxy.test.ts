/**
 * The relay behind a real HAProxy in TCP mode with `send-proxy-v2` (EDGE.md §3, §5): clients dial
 * HAProxy from different loopback addresses (127.0.0.2, 127.0.0.3, …), HAProxy always reaches the
 * relay from 127.0.0.1, and the relay's rate limit, per-IP cap and logs must see the address
 * HAProxy reports — the client's — never HAProxy's own.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type HaProxy, haproxyBinary, startHaProxy } from "../support/HaProxy.ts"
import { dialBinary, dialPhone, envelopes, eventually, type Peer, upgradeStatus } from "../support/Peers.ts"
import { metricValue, rawConnect } from "../support/ProxyClient.ts"
import { type RelayProcess, startRelay } from "../support/RelayProcess.ts"

if (haproxyBinary === undefined) {
  console.warn("haproxy.test.ts: SKIPPED — `haproxy` not found on PATH or in /usr/sbin (install the Debian package `haproxy`)")
}

const from = (localAddress: string) => ({ wsOptions: { localAddress } })
const serverHeaders = (id: string) => ({ "X-Pyrycode-Server": id, "X-Pyrycode-Version": "1", "User-Agent": "t" })

describe.skipIf(haproxyBinary === undefined)("behind HAProxy with send-proxy-v2", () => {
  let relay: RelayProcess
  let haproxy: HaProxy
  let url: string
  const open: Array<Peer> = []

  beforeAll(async () => {
    relay = await startRelay(["--proxy-protocol", "--rate-limit-burst", "4", "--max-connections-per-ip", "2"])
    haproxy = await startHaProxy(relay.port)
    url = `ws://127.0.0.1:${haproxy.port}`
  })
  afterAll(async () => {
    for (const peer of open) peer.ws.terminate()
    if (haproxy !== undefined) await haproxy.stop()
    if (relay !== undefined) expect(await relay.stop()).toBe(0)
  })

  it("relays phone ↔ binary traffic through HAProxy", async () => {
    const binary = await dialBinary(url, "hap-1", from("127.0.0.5"))
    const phone = await dialPhone(url, "hap-1", from("127.0.0.6"))
    phone.send(`{"via":"haproxy"}`)
    await binary.waitFor(1)
    binary.send(JSON.stringify({ conn_id: envelopes(binary)[0]!.conn_id, frame: { back: true } }))
    expect(await phone.waitFor(1)).toEqual([`{"back":true}`])
    phone.ws.close()
    binary.ws.close()
    await Promise.all([phone.closed, binary.closed])
  })

  it("the per-IP cap counts the address HAProxy reports", async () => {
    open.push(await dialBinary(url, "hap-cap-1", from("127.0.0.2")))
    open.push(await dialBinary(url, "hap-cap-2", from("127.0.0.2")))
    // Third from the same client: over its cap of 2 (its third token).
    expect(await upgradeStatus(`${url}/v1/server`, serverHeaders("hap-cap-3"), { localAddress: "127.0.0.2" })).toBe(503)
    // Another client, same HAProxy connection source: its own cap.
    open.push(await dialBinary(url, "hap-cap-4", from("127.0.0.3")))
    await eventually(() =>
      relay.logs.some((l) => l.includes(`"connection cap reached"`) && l.includes(`"remote":"127.0.0.2"`))
    )
  })

  it("the rate limit counts the address HAProxy reports", async () => {
    // 127.0.0.2 has spent 3 of its 4 tokens: one more attempt (still over the cap), then 429.
    expect(await upgradeStatus(`${url}/v1/server`, serverHeaders("hap-rl-1"), { localAddress: "127.0.0.2" })).toBe(503)
    expect(await upgradeStatus(`${url}/v1/server`, serverHeaders("hap-rl-2"), { localAddress: "127.0.0.2" })).toBe(429)
    // A fresh client is unaffected.
    const fresh = await dialBinary(url, "hap-rl-3", from("127.0.0.4"))
    fresh.ws.close()
    await fresh.closed
    await eventually(() => relay.logs.some((l) => l.includes(`"rate limited"`) && l.includes(`"remote":"127.0.0.2"`)))
  })

  it("no limit or log ever saw HAProxy's own address, and no connection from HAProxy was refused", async () => {
    const limitLines = relay.logs.filter((l) => l.includes(`"rate limited"`) || l.includes(`"connection cap reached"`))
    expect(limitLines.length).toBeGreaterThan(0)
    for (const line of limitLines) expect(line).not.toContain(`"remote":"127.0.0.1"`)
    expect(await metricValue(relay.metricsUrl, `pyrycode_relay_connections_rejected_total{reason="proxy_header"}`)).toBe(0)
  })

  it("a client that goes around HAProxy is refused with zero bytes", async () => {
    const direct = await rawConnect(relay.port)
    direct.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    const { received } = await direct.outcome
    expect(received.length).toBe(0)
    await eventually(async () =>
      (await metricValue(relay.metricsUrl, `pyrycode_relay_connections_rejected_total{reason="proxy_header"}`)) === 1
    )
  })
})
