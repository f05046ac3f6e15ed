/**
 * `--proxy-protocol` end to end with raw bytes (EDGE.md §3): a relay process behind which every
 * connection must open with a PROXY v2 header. Every refused form is closed with zero bytes
 * written and counted `connections_rejected{reason="proxy_header"}`; an accepted header's source
 * address is what the rate limit, the per-IP cap and the logs see; a slow header never holds up
 * other connections.
 */
import { mkdtempSync, rmSync } from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Tls from "node:tls"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { dialBinary, dialPhone, envelopes, eventually, sleep, upgradeStatus } from "../support/Peers.ts"
import { metricValue, proxiedGet, rawConnect, viaProxy } from "../support/ProxyClient.ts"
import { proxyV2, SIG } from "../support/ProxyV2.ts"
import { type RelayProcess, runCli, startRelay } from "../support/RelayProcess.ts"
import { hasOpenssl, issueServerCertificate } from "../support/TestCa.ts"

const REJECTED = `pyrycode_relay_connections_rejected_total{reason="proxy_header"}`

/** Opens a connection, writes `bytes` (in pieces when given several), and returns what came back. */
const sendRaw = async (port: number, ...pieces: Array<Buffer | string>) => {
  const peer = await rawConnect(port)
  for (const piece of pieces) {
    peer.write(piece)
    await sleep(20)
  }
  return peer.outcome
}

describe("PROXY protocol v2 gate", () => {
  let relay: RelayProcess
  let refused = 0

  const expectRefusedCount = async () =>
    eventually(async () => (await metricValue(relay.metricsUrl, REJECTED)) === refused, 3000)

  beforeAll(async () => {
    relay = await startRelay(["--proxy-protocol", "--log-level", "debug"])
  })
  afterAll(async () => {
    if (relay !== undefined) expect(await relay.stop()).toBe(0)
  })

  it("the proxy_header series exists at 0 from boot", async () => {
    expect(await metricValue(relay.metricsUrl, REJECTED)).toBe(0)
  })

  it("a header followed by a request in the same segment is served", async () => {
    const peer = await rawConnect(relay.port)
    peer.write(Buffer.concat([proxyV2(), Buffer.from("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")]))
    const { received } = await peer.outcome
    expect(received.toString()).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
    expect(received.toString()).toContain(`"status":"ok"`)
  })

  it("a header trickling in byte by byte, then the request, is served", async () => {
    const header = proxyV2({ family: 2, source: "2001:db8::7" })
    const peer = await rawConnect(relay.port)
    for (const byte of header) {
      peer.write(Buffer.from([byte]))
      await sleep(2)
    }
    peer.write("GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    const { received } = await peer.outcome
    expect(received.toString()).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
  })

  it("phone ↔ binary traffic flows through proxied connections", async () => {
    const binary = await dialBinary(relay.url, "pp-1", { wsOptions: { createConnection: viaProxy("203.0.113.10") } })
    const phone = await dialPhone(relay.url, "pp-1", { wsOptions: { createConnection: viaProxy("203.0.113.11") } })
    phone.send(`{"n":1}`)
    await binary.waitFor(1)
    binary.send(JSON.stringify({ conn_id: envelopes(binary)[0]!.conn_id, frame: { ok: true } }))
    expect(await phone.waitFor(1)).toEqual([`{"ok":true}`])
    phone.ws.close()
    binary.ws.close()
    await Promise.all([phone.closed, binary.closed])
  })

  const refusals: ReadonlyArray<{ name: string; pieces: ReadonlyArray<Buffer | string> }> = [
    { name: "a version 1 text header", pieces: ["PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\nGET /healthz HTTP/1.1\r\n\r\n"] },
    { name: "the LOCAL command", pieces: [proxyV2({ command: 0, family: 0, transport: 0 }), "GET /healthz HTTP/1.1\r\n\r\n"] },
    { name: "the UNSPEC family", pieces: [proxyV2({ family: 0, transport: 0 }), "GET /healthz HTTP/1.1\r\n\r\n"] },
    { name: "the UNIX family", pieces: [proxyV2({ family: 3, addresses: Buffer.alloc(216) }), "GET /healthz HTTP/1.1\r\n\r\n"] },
    { name: "a datagram (UDP) source", pieces: [proxyV2({ transport: 2 }), "GET /healthz HTTP/1.1\r\n\r\n"] },
    { name: "a bad signature", pieces: [Buffer.concat([SIG.subarray(0, 11), Buffer.from([0x00]), proxyV2().subarray(12)])] },
    { name: "an oversized header (length 65535)", pieces: [proxyV2({ length: 0xffff }), Buffer.alloc(8192, 1)] },
    { name: "no header: plain HTTP", pieces: ["GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"] },
    { name: "no header: a TLS ClientHello", pieces: [Buffer.from("160301020001", "hex")] }
  ]
  for (const c of refusals) {
    it(`${c.name} is closed with zero bytes written and counted`, async () => {
      const { received, closedAfterMs } = await sendRaw(relay.port, ...c.pieces)
      refused++
      expect(received.length).toBe(0)
      expect(closedAfterMs).toBeLessThan(2000)
      await expectRefusedCount()
    })
  }

  it("a truncated header (the peer finishes mid-header) is closed with zero bytes and counted", async () => {
    const peer = await rawConnect(relay.port)
    peer.write(proxyV2().subarray(0, 20))
    await sleep(50)
    peer.socket.end()
    const { received } = await peer.outcome
    refused++
    expect(received.length).toBe(0)
    await expectRefusedCount()
  })

  it("a header later than 5 s is too late: closed at the deadline with zero bytes, and counted", async () => {
    const peer = await rawConnect(relay.port)
    peer.write(proxyV2().subarray(0, 10))
    await sleep(4500)
    expect(peer.isClosed()).toBe(false)
    const { received, closedAfterMs } = await peer.outcome
    refused++
    expect(received.length).toBe(0)
    expect(closedAfterMs).toBeGreaterThanOrEqual(4900)
    expect(closedAfterMs).toBeLessThan(6500)
    peer.write(proxyV2().subarray(10))
    await expectRefusedCount()
  }, 15_000)

  it("a silent connection never holds up another: a proxied request is answered while it waits", async () => {
    const silent = await rawConnect(relay.port)
    const started = Date.now()
    const response = await proxiedGet(relay.port, "/healthz", "203.0.113.12")
    expect(response.status).toBe(200)
    expect(Date.now() - started).toBeLessThan(1000)
    expect(silent.isClosed()).toBe(false)
    silent.socket.destroy()
    await silent.outcome
    refused++ // the silent connection ended without a header
    await expectRefusedCount()
  })

  it("logs each refusal at debug with the reason and the balancer's address, never as the client", async () => {
    await eventually(() => relay.logs.some((l) => l.includes(`"proxy header refused"`) && l.includes(`"reason":"local"`)))
    const lines = relay.logs.filter((l) => l.includes(`"proxy header refused"`)).map((l) => JSON.parse(l) as Record<string, unknown>)
    for (const line of lines) {
      expect(line.level).toBe("debug")
      expect(line.remote).toBe("127.0.0.1")
    }
    const reasons = new Set(lines.map((l) => l.reason))
    for (const reason of ["v1", "local", "unspec", "unix", "datagram", "bad_signature", "oversized", "truncated", "late"]) {
      expect(reasons).toContain(reason)
    }
  })
})

describe("the header's source address is the client's", () => {
  let relay: RelayProcess
  beforeAll(async () => {
    relay = await startRelay(["--proxy-protocol", "--rate-limit-burst", "2", "--max-connections-per-ip", "1"])
  })
  afterAll(async () => {
    if (relay !== undefined) expect(await relay.stop()).toBe(0)
  })

  const headers = { "X-Pyrycode-Server": "pp-limit", "X-Pyrycode-Version": "1", "User-Agent": "t" }

  it("the per-IP cap counts by the header's address", async () => {
    const first = await dialBinary(relay.url, "pp-cap-1", { wsOptions: { createConnection: viaProxy("198.51.100.20") } })
    const same = await upgradeStatusVia(`${relay.url}/v1/server`, "198.51.100.20", { ...headers, "X-Pyrycode-Server": "pp-cap-2" })
    expect(same).toBe(503)
    const other = await dialBinary(relay.url, "pp-cap-3", { wsOptions: { createConnection: viaProxy("198.51.100.21") } })
    first.ws.close()
    other.ws.close()
    await Promise.all([first.closed, other.closed])
    await eventually(() =>
      relay.logs.some((l) => l.includes(`"connection cap reached"`) && l.includes(`"remote":"198.51.100.20"`))
    )
  })

  it("the rate limit counts by the header's address, not the connection's", async () => {
    // 198.51.100.20 spent one token above, plus the refused one: its bucket is empty.
    expect(await upgradeStatusVia(`${relay.url}/v1/server`, "198.51.100.20", headers)).toBe(429)
    // Same TCP peer (127.0.0.1), another client behind the balancer: its own bucket.
    const ok = await dialBinary(relay.url, "pp-rate-2", { wsOptions: { createConnection: viaProxy("198.51.100.30") } })
    ok.ws.close()
    await ok.closed
    await eventually(() => relay.logs.some((l) => l.includes(`"rate limited"`) && l.includes(`"remote":"198.51.100.20"`)))
    expect(relay.logs.some((l) => l.includes(`"rate limited"`) && l.includes(`"remote":"127.0.0.1"`))).toBe(false)
  })
})

describe.skipIf(!hasOpenssl)("PROXY protocol v2 in front of TLS (--tls-cert)", () => {
  let relay: RelayProcess
  let dir: string
  let ca: Buffer
  beforeAll(async () => {
    dir = mkdtempSync(Path.join(Os.tmpdir(), "relay-pp-tls-"))
    const issued = issueServerCertificate(dir, ["127.0.0.1"])
    ca = issued.caPem
    relay = await startRelay(
      ["--proxy-protocol", "--max-connections-per-ip", "1", "--tls-cert", issued.certFile, "--tls-key", issued.keyFile],
      { tls: true }
    )
  })
  afterAll(async () => {
    if (relay !== undefined) expect(await relay.stop()).toBe(0)
    rmSync(dir, { recursive: true, force: true })
  })

  it("the header and the ClientHello in one segment: the handshake completes and the request is served", async () => {
    const raw = Net.connect({ host: "127.0.0.1", port: relay.port })
    // Corked: the header and TLS's first flight leave in one write.
    raw.cork()
    raw.write(proxyV2({ source: "192.0.2.44" }))
    const tls = Tls.connect({ socket: raw, ca, host: "127.0.0.1" })
    setTimeout(() => raw.uncork(), 30)
    await new Promise<void>((resolve, reject) => {
      tls.once("secureConnect", resolve)
      tls.once("error", reject)
    })
    tls.write("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    let text = ""
    tls.on("data", (d: Buffer) => (text += d.toString()))
    await new Promise((resolve) => tls.once("end", resolve))
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
    tls.destroy()
  })

  it("wss:// through proxied connections, and each client's address reaches the per-IP cap", async () => {
    const binary = await dialBinary(relay.url, "pp-tls-1", {
      ca,
      wsOptions: { createConnection: viaProxy("192.0.2.45", { ca }) }
    })
    // Another address: admitted although the cap is 1 per IP and the TCP peer is the same.
    const phone = await dialPhone(relay.url, "pp-tls-1", { ca, wsOptions: { createConnection: viaProxy("192.0.2.46", { ca }) } })
    phone.send(`{"over":"tls"}`)
    await binary.waitFor(1)
    expect(envelopes(binary)[0]!.frame).toEqual({ over: "tls" })
    const second = await upgradeStatus(`${relay.url}/v1/client`, {
      "X-Pyrycode-Server": "pp-tls-1",
      "X-Pyrycode-Token": "t",
      "User-Agent": "t"
    }, { ca, createConnection: viaProxy("192.0.2.46", { ca }) })
    expect(second).toBe(503)
    await eventually(() =>
      relay.logs.some((l) => l.includes(`"connection cap reached"`) && l.includes(`"remote":"192.0.2.46"`))
    )
    phone.ws.close()
    binary.ws.close()
    await Promise.all([phone.closed, binary.closed])
  })

  it("a ClientHello without a header is closed with zero bytes written", async () => {
    const raw = await rawConnect(relay.port)
    const tls = Tls.connect({ socket: raw.socket, ca, host: "127.0.0.1" })
    tls.on("error", () => {})
    const { received } = await raw.outcome
    expect(received.length).toBe(0)
  })
})

/** The status a refused upgrade got, over a connection that claims `source`. */
const upgradeStatusVia = (url: string, source: string, headers: Record<string, string>) =>
  upgradeStatus(url, headers, { createConnection: viaProxy(source) })

describe("boot", () => {
  it("--proxy-protocol with --trust-x-forwarded-for is refused: exit 2, one line naming both", async () => {
    const result = await runCli(["--proxy-protocol", "--trust-x-forwarded-for", "--metrics-listen", ""])
    expect(result.code, result.stderr).toBe(2)
    const lines = result.stderr.trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain("--proxy-protocol")
    expect(lines[0]).toContain("--trust-x-forwarded-for")
  })

  it("PYRYCODE_RELAY_PROXY_PROTOCOL=true turns it on", async () => {
    const relay = await startRelay([], { env: { PYRYCODE_RELAY_PROXY_PROTOCOL: "true" } })
    try {
      const { received } = await sendRaw(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
      expect(received.length).toBe(0)
      expect((await proxiedGet(relay.port, "/healthz", "192.0.2.1")).status).toBe(200)
    } finally {
      expect(await relay.stop()).toBe(0)
    }
  })

  it("SIGTERM does not wait for connections still owing their header", async () => {
    const relay = await startRelay(["--proxy-protocol", "--handshake-timeout", "20s"])
    const silent = await rawConnect(relay.port)
    await sleep(100)
    const started = Date.now()
    expect(await relay.stop()).toBe(0)
    expect(Date.now() - started).toBeLessThan(3000)
    const { received } = await silent.outcome
    expect(received.length).toBe(0)
  })

  it("without --proxy-protocol a PROXY header is just a bad request", async () => {
    const relay = await startRelay([])
    try {
      const { received } = await sendRaw(relay.port, Buffer.concat([proxyV2(), Buffer.from("GET /healthz HTTP/1.1\r\n\r\n")]))
      expect(received.toString()).toMatch(/^HTTP\/1\.1 400 /)
    } finally {
      expect(await relay.stop()).toBe(0)
    }
  })
})
