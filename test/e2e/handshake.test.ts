/**
 * The WebSocket handshake, strictly (SPEC §1.2 steps 3–4, issue 12 items 2, 3 and 6), over raw
 * TCP against the relay process: the version is exactly `13`, HTTP/1.1 with one `Host`, no
 * required header twice, no subprotocol or extension selected, pipelined requests answered in
 * order, and the connection-cap slot back on every path.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type RelayProcess, startRelay } from "../support/RelayProcess.ts"
import { buildFrame, OP, parseFrames } from "../support/RawFrames.ts"
import { dialBinary, dialPhone, eventually } from "../support/Peers.ts"
import {
  exchange,
  handshakeLines,
  header,
  type HeaderLines,
  parseResponses,
  replaceLines,
  requestHead,
  respond,
  upgraded
} from "../support/RawHttp.ts"

let relay: RelayProcess
let n = 0
const sid = () => `hs-${process.pid}-${++n}`

beforeAll(async () => {
  relay = await startRelay()
})
afterAll(async () => {
  await relay.stop()
})

const endpoints = {
  server: (serverId: string): HeaderLines => [
    ["X-Pyrycode-Server", serverId],
    ["X-Pyrycode-Version", "1.0"],
    ["User-Agent", "pyry"]
  ],
  client: (serverId: string): HeaderLines => [
    ["X-Pyrycode-Server", serverId],
    ["X-Pyrycode-Token", "secret-token"],
    ["User-Agent", "android"]
  ]
} as const
const paths = { server: "/v1/server", client: "/v1/client" } as const

/** The one response to an upgrade of `endpoint` whose handshake lines are `lines`. */
const answer = async (
  endpoint: keyof typeof endpoints,
  lines: HeaderLines,
  options: { readonly method?: string; readonly version?: string; readonly serverId?: string } = {}
) => {
  const responses = await respond(relay.port, {
    path: paths[endpoint],
    ...options,
    headers: [...lines, ...endpoints[endpoint](options.serverId ?? sid())]
  })
  expect(responses).toHaveLength(1)
  return responses[0]!
}

const health = async () => (await fetch(`${relay.httpUrl}/healthz`)).json()

const scrape = async () => (await fetch(relay.metricsUrl)).text()
const attempts = async (): Promise<Record<string, number>> => {
  const counts: Record<string, number> = {}
  for (const line of (await scrape()).split("\n")) {
    if (line.startsWith("pyrycode_relay_ws_upgrade_attempts_total{")) {
      const [series, value] = line.split(" ")
      counts[series!] = Number(value)
    }
  }
  return counts
}
const attemptsOf = (counts: Record<string, number>, endpoint: string, outcome: string): number => {
  const key = Object.keys(counts).find((k) => k.includes(`endpoint="${endpoint}"`) && k.includes(`outcome="${outcome}"`))
  return key === undefined ? NaN : counts[key]!
}

describe("Sec-WebSocket-Version", () => {
  const bad = ["8", "013", "13.0", "0xd", "1.3e1", "12", "14", "", "13, 8"]

  it("answers 426 with Sec-WebSocket-Version: 13 to any version but exactly 13, on both endpoints", async () => {
    for (const endpoint of ["server", "client"] as const) {
      for (const value of bad) {
        const response = await answer(endpoint, replaceLines(handshakeLines, "Sec-WebSocket-Version", ["Sec-WebSocket-Version", value]))
        expect({ endpoint, value, status: response.status }).toEqual({ endpoint, value, status: 426 })
        expect(header(response, "sec-websocket-version")).toEqual(["13"])
        if (value.length > 1) expect(response.body.toString("latin1")).not.toContain(value)
      }
      const missing = await answer(endpoint, replaceLines(handshakeLines, "Sec-WebSocket-Version"))
      expect(missing.status).toBe(426)
      expect(header(missing, "sec-websocket-version")).toEqual(["13"])
      const twice = await answer(
        endpoint,
        replaceLines(handshakeLines, "Sec-WebSocket-Version", ["Sec-WebSocket-Version", "13"], ["Sec-WebSocket-Version", "13"])
      )
      expect(twice.status).toBe(426)
    }
    expect(await health()).toMatchObject({ connected_binaries: 0, connected_phones: 0 })
  })
})

describe("request line and Host", () => {
  it("answers 400 to an HTTP/1.0 upgrade and to one without exactly one non-empty Host", async () => {
    for (const endpoint of ["server", "client"] as const) {
      expect((await answer(endpoint, handshakeLines, { version: "HTTP/1.0" })).status).toBe(400)
      expect((await answer(endpoint, replaceLines(handshakeLines, "Host"))).status).toBe(400)
      expect((await answer(endpoint, replaceLines(handshakeLines, "Host", ["Host", ""]))).status).toBe(400)
      const twoHosts = replaceLines(handshakeLines, "Host", ["Host", "127.0.0.1"], ["Host", "127.0.0.1"])
      expect((await answer(endpoint, twoHosts)).status).toBe(400)
    }
    expect(await health()).toMatchObject({ connected_binaries: 0, connected_phones: 0 })
  })

  it("answers 405 with Allow: GET to another method, 400 to a bad Upgrade or key", async () => {
    for (const endpoint of ["server", "client"] as const) {
      const post = await answer(endpoint, handshakeLines, { method: "POST" })
      expect(post.status).toBe(405)
      expect(header(post, "allow")).toEqual(["GET"])
      const badUpgrade = replaceLines(handshakeLines, "Upgrade", ["Upgrade", "websocket2"])
      expect((await answer(endpoint, badUpgrade)).status).toBe(400)
      expect((await answer(endpoint, replaceLines(handshakeLines, "Sec-WebSocket-Key"))).status).toBe(400)
      const shortKey = replaceLines(handshakeLines, "Sec-WebSocket-Key", ["Sec-WebSocket-Key", "c2hvcnQ="])
      expect((await answer(endpoint, shortKey)).status).toBe(400)
      const key = handshakeLines.find(([k]) => k === "Sec-WebSocket-Key")!
      expect((await answer(endpoint, replaceLines(handshakeLines, "Sec-WebSocket-Key", key, key))).status).toBe(400)
    }
    expect(await health()).toMatchObject({ connected_binaries: 0, connected_phones: 0 })
  })

  it("counts a handshake refusal under no upgrade outcome, as before the header gate's own checks", async () => {
    const before = await attempts()
    await answer("server", replaceLines(handshakeLines, "Sec-WebSocket-Version", ["Sec-WebSocket-Version", "8"]))
    await answer("client", handshakeLines, { version: "HTTP/1.0" })
    expect(await attempts()).toEqual(before)
  })
})

describe("repeated headers", () => {
  it("answers 400 to every required header sent twice (equal, different or empty values), on both endpoints", async () => {
    const before = await attempts()
    let rejected = { server: 0, client: 0 }
    for (const endpoint of ["server", "client"] as const) {
      const serverId = sid()
      const lines = endpoints[endpoint](serverId)
      for (const [name, value] of lines) {
        for (const pair of [[value, value], [value, "other"], ["", ""]] as const) {
          const twice = replaceLines(lines, name, [name, pair[0]], [name, pair[1]])
          const [response, ...more] = await respond(relay.port, { path: paths[endpoint], headers: [...handshakeLines, ...twice] })
          expect({ endpoint, name, pair, status: response?.status }).toEqual({ endpoint, name, pair, status: 400 })
          expect(more).toEqual([])
          rejected = { ...rejected, [endpoint]: rejected[endpoint] + 1 }
        }
      }
    }
    expect(await health()).toMatchObject({ connected_binaries: 0, connected_phones: 0 })
    const after = await attempts()
    expect(attemptsOf(after, "server", "reject_headers") - attemptsOf(before, "server", "reject_headers")).toBe(rejected.server)
    expect(attemptsOf(after, "client", "reject_headers") - attemptsOf(before, "client", "reject_headers")).toBe(rejected.client)
  })

  it("answers 400 to a repeated X-Pyrycode-Device-Name (the relay never joins values it keeps)", async () => {
    const serverId = sid()
    const binary = await dialBinary(relay.url, serverId)
    const lines: HeaderLines = [...endpoints.client(serverId), ["X-Pyrycode-Device-Name", "a"], ["X-Pyrycode-Device-Name", "b"]]
    const [response] = await respond(relay.port, { path: "/v1/client", headers: [...handshakeLines, ...lines] })
    expect(response?.status).toBe(400)
    expect(await health()).toMatchObject({ connected_phones: 0 })
    binary.ws.close()
    await binary.closed
  })
})

describe("subprotocols and extensions", () => {
  it("selects neither, whatever the client offers, and the connection works", async () => {
    const offers: HeaderLines = [
      ["Sec-WebSocket-Protocol", "chat, superchat"],
      ["Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"]
    ]
    for (const endpoint of ["server", "client"] as const) {
      const serverId = sid()
      const binary = endpoint === "client" ? await dialBinary(relay.url, serverId) : undefined
      const response = await answer(endpoint, [...handshakeLines, ...offers], { serverId })
      expect(response.status).toBe(101)
      expect(header(response, "sec-websocket-protocol")).toEqual([])
      expect(header(response, "sec-websocket-extensions")).toEqual([])
      binary?.ws.close()
    }
  })
})

describe("pipelined requests before an upgrade", () => {
  it("answers both /healthz first, then the 101, and after it only WebSocket frames", async () => {
    const serverId = sid()
    const healthz = requestHead({ path: "/healthz", headers: [["Host", "127.0.0.1"]] })
    const upgrade = requestHead({ path: "/v1/server", headers: [...handshakeLines, ...endpoints.server(serverId)] })
    const ping = buildFrame({ opcode: OP.ping, payload: "after-101" })
    const request = Buffer.concat([Buffer.from(healthz + healthz + upgrade, "latin1"), ping])
    const pong = (bytes: Buffer) => {
      const { responses, rest } = parseResponses(bytes)
      return responses.at(-1)?.status === 101 && parseFrames(rest).frames.some((f) => f.opcode === OP.pong)
    }
    const { bytes } = await exchange(relay.port, request, { until: pong })
    const { responses, rest } = parseResponses(bytes)
    expect(responses.map((r) => r.status)).toEqual([200, 200, 101])
    for (const r of responses.slice(0, 2)) expect(JSON.parse(r.body.toString("utf8")).status).toBe("ok")
    const frames = parseFrames(rest)
    expect(frames.rest.length).toBe(0)
    expect(frames.frames.map((f) => [f.opcode, f.payload.toString("utf8")])).toEqual([[OP.pong, "after-101"]])
  })

  it("answers a refused upgrade after the earlier responses too", async () => {
    const healthz = requestHead({ path: "/healthz", headers: [["Host", "127.0.0.1"]] })
    const upgrade = requestHead({ path: "/v1/client", headers: [...handshakeLines, ["User-Agent", "x"]] })
    const { bytes, closedByRelay } = await exchange(relay.port, healthz + healthz + upgrade)
    expect(closedByRelay).toBe(true)
    expect(parseResponses(bytes).responses.map((r) => r.status)).toEqual([200, 200, 400])
  })

  it("answers a malformed request pipelined behind /healthz after their responses too", async () => {
    const healthz = requestHead({ path: "/healthz", headers: [["Host", "127.0.0.1"]] })
    for (const malformed of ["GARBAGE\r\n\r\n", "GET /v1/server HTTP/1.1\r\nNo colon here\r\n\r\n"]) {
      const { bytes, closedByRelay } = await exchange(relay.port, healthz + healthz + malformed)
      expect(closedByRelay).toBe(true)
      expect(parseResponses(bytes).responses.map((r) => r.status)).toEqual([200, 200, 400])
    }
  })

  it("gives up quietly when the client hangs up while earlier responses are still owed", async () => {
    const own = await startRelay(["--max-connections", "1"])
    const healthz = requestHead({ path: "/healthz", headers: [["Host", "127.0.0.1"]] })
    const upgrade = requestHead({ path: "/v1/server", headers: [...handshakeLines, ...endpoints.server(sid())] })
    // Hang up as soon as the first answer arrives: the upgrade is still waiting for the rest.
    for (let i = 0; i < 20; i++) await exchange(own.port, healthz.repeat(8) + upgrade, { until: () => true })
    const binary = await dialBinary(own.url, sid())
    binary.ws.close()
    await binary.closed
    // A handler left waiting would hold the drain to its deadline.
    const started = Date.now()
    expect(await own.stop()).toBe(0)
    expect(own.logs.some((l) => l.includes(`"drain incomplete"`))).toBe(false)
    expect(Date.now() - started).toBeLessThan(5000)
  })
})

describe("the connection-cap slot", () => {
  it("is back after every kind of refusal and after every session, with --max-connections 1", async () => {
    const capped = await startRelay(["--max-connections", "1"])
    try {
      const port = capped.port
      const statusOf = async (path: string, lines: HeaderLines, options: { version?: string } = {}) => {
        const { bytes } = await exchange(port, requestHead({ path, ...options, headers: lines }), { until: upgraded })
        return parseResponses(bytes).responses.map((r) => r.status)
      }
      // The previous step's slot is released when its handler ends, a moment after the client
      // sees the end; a slot that leaks turns every later attempt into 503 for good.
      const expectStatus = async (path: string, lines: HeaderLines, expected: number, options: { version?: string } = {}) => {
        let last: Array<number> = []
        await eventually(async () => {
          last = await statusOf(path, lines, options)
          return last[0] !== 503
        })
        expect(last).toEqual([expected])
      }
      const server = (serverId: string): HeaderLines => [...handshakeLines, ...endpoints.server(serverId)]
      const connects = async (serverId: string) => {
        let binary: Awaited<ReturnType<typeof dialBinary>> | undefined
        await eventually(async () => (binary = await dialBinary(capped.url, serverId).catch(() => undefined)) !== undefined)
        return binary!
      }
      const healthz = requestHead({ path: "/healthz", headers: [["Host", "127.0.0.1"]] })

      for (let round = 0; round < 3; round++) {
        // The header gate (missing, repeated).
        await expectStatus("/v1/server", handshakeLines, 400)
        await expectStatus("/v1/server", [...server("dup"), ["User-Agent", "again"]], 400)
        // The handshake checks (version, HTTP/1.0, Host).
        await expectStatus("/v1/server", replaceLines(server("v"), "Sec-WebSocket-Version", ["Sec-WebSocket-Version", "8"]), 426)
        await expectStatus("/v1/server", server("old"), 400, { version: "HTTP/1.0" })
        await expectStatus("/v1/server", replaceLines(server("nohost"), "Host"), 400)
        // Refused by ws itself (a malformed subprotocol list).
        await expectStatus("/v1/client", [...handshakeLines, ...endpoints.client("p"), ["Sec-WebSocket-Protocol", "a, a"]], 400)
        // A phone closed 4404: its session ends by itself.
        let lost: Awaited<ReturnType<typeof dialPhone>> | undefined
        await eventually(async () => (lost = await dialPhone(capped.url, `nobody-${round}`).catch(() => undefined)) !== undefined)
        expect((await lost!.closed).code).toBe(4404)
        // A binary session that the peer ends; then one that is reset.
        const binary = await connects(`cap-${round}`)
        binary.ws.close()
        await binary.closed
        const reset = await connects(`reset-${round}`)
        reset.ws.terminate()
        // An upgrade pipelined behind /healthz, and one whose client leaves while it waits.
        await eventually(async () => {
          const upgrade = requestHead({ path: "/v1/server", headers: server(`pipe-${round}`) })
          const { bytes } = await exchange(port, healthz + upgrade, { until: upgraded })
          const statuses = parseResponses(bytes).responses.map((r) => r.status)
          if (statuses[1] === 503) return false
          expect(statuses).toEqual([200, 101])
          return true
        })
        await exchange(port, healthz.repeat(8) + requestHead({ path: "/v1/server", headers: server("gone") }), { until: () => true })
      }
      const last = await connects("last")
      last.ws.close()
      await last.closed
    } finally {
      await capped.stop()
    }
  })
})
