/**
 * No peer makes the log grow faster than its own traffic (SPEC §11, issue 12 item 10), against
 * the relay process: a binary with a 16 000-byte server-id sending `{}` 2 000 times, and a client
 * hammering the upgrade past its rate limit and past the per-IP cap. Each case checks that the
 * lines are few and short, and that no occurrence is lost: every line stands for itself plus the
 * `suppressed` count it carries.
 */
import { afterEach, describe, expect, it } from "vitest"
import { dialBinary, eventually, sleep, upgradeStatus } from "../support/Peers.ts"
import { killTracked, type RelayProcess, startTrackedRelay } from "../support/RelayProcess.ts"

afterEach(killTracked)

type Line = Record<string, unknown>

const linesOf = (relay: RelayProcess, from: number, event: string): Array<Line> =>
  relay.logs.slice(from).filter((l) => l.length > 0).map((l) => JSON.parse(l) as Line).filter((l) => l.event === event)

/** What the lines account for: each line itself plus the occurrences it says were held back. */
const occurrences = (lines: ReadonlyArray<Line>): number =>
  lines.reduce((n, line) => n + 1 + (typeof line.suppressed === "number" ? line.suppressed : 0), 0)

const malformedDropped = async (relay: RelayProcess): Promise<number> => {
  const text = await (await fetch(relay.metricsUrl)).text()
  const match = /^pyrycode_relay_frames_dropped_total\{[^}]*reason="malformed_envelope"[^}]*\} (\d+)/m.exec(text)
  return Number(match?.[1] ?? 0)
}

/** Upgrade attempts with at most 16 in flight; returns their statuses. */
const attempts = async (n: number, attempt: () => Promise<number>): Promise<Array<number>> => {
  const statuses: Array<number> = []
  let started = 0
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (started < n) {
      started++
      statuses.push(await attempt())
    }
  }))
  return statuses
}

describe("log amplification", () => {
  it("a binary with a 16 000-byte server-id sending `{}` 2 000 times: a few short lines, the server-id cut to 128 bytes", async () => {
    const relay = await startTrackedRelay()
    const serverId = "x".repeat(16_000)
    const from = relay.logs.length
    const binary = await dialBinary(relay.url, serverId)
    const started = Date.now()
    for (let i = 0; i < 2_000; i++) binary.send("{}")
    await eventually(async () => (await malformedDropped(relay)) >= 2_000, 20_000)
    await sleep(200) // the last lines are on their way through the stderr pipe
    const seconds = (Date.now() - started) / 1000

    const dropped = linesOf(relay, from, "envelope dropped")
    expect(dropped.length).toBeGreaterThanOrEqual(1)
    expect(dropped.length).toBeLessThanOrEqual(Math.ceil(seconds) + 1)
    for (const line of relay.logs.slice(from)) expect(Buffer.byteLength(line), line.slice(0, 300)).toBeLessThan(600)
    const lineBytes = relay.logs.slice(from).map((line) => Buffer.byteLength(line))
    console.log(JSON.stringify({
      case: "log amplification: 2 000 × {}",
      seconds,
      envelopeDroppedLines: dropped.length,
      lines: lineBytes.length,
      maxLineBytes: Math.max(...lineBytes),
      totalBytes: lineBytes.reduce((a, b) => a + b, 0)
    }))
    expect(dropped[0]!.server_id).toBe(`${"x".repeat(128)}…`)
    expect(dropped[0]!.binary_conn_id).toMatch(new RegExp(`^server-x{128}…-[0-9a-f]{8}$`))
    expect(linesOf(relay, from, "server claimed")[0]!.server_id).toBe(`${"x".repeat(128)}…`)

    // A second later one more: its line carries what was held back, so nothing goes unaccounted.
    await sleep(1_100)
    binary.send("{}")
    await eventually(() => occurrences(linesOf(relay, from, "envelope dropped")) === 2_001, 10_000)
    expect(linesOf(relay, from, "envelope dropped").at(-1)!.suppressed).toBeGreaterThan(0)
    binary.ws.close()
  }, 60_000)

  it("300 upgrades past the rate limit, and 300 past the per-IP cap: one line per second and reason each", async () => {
    const relay = await startTrackedRelay(["--rate-limit-burst", "1", "--rate-limit-refill", "1h"])
    const from = relay.logs.length
    const started = Date.now()
    const statuses = await attempts(301, () => upgradeStatus(`${relay.url}/v1/client`, {}))
    const seconds = (Date.now() - started) / 1000
    expect(statuses.filter((s) => s === 429).length).toBe(300)
    const limited = linesOf(relay, from, "rate limited")
    expect(limited.length).toBeLessThanOrEqual(Math.ceil(seconds) + 1)
    await sleep(1_100)
    expect(await upgradeStatus(`${relay.url}/v1/client`, {})).toBe(429)
    await eventually(() => occurrences(linesOf(relay, from, "rate limited")) === 301)
    await relay.stop()

    const capped = await startTrackedRelay(["--max-connections-per-ip", "1"])
    const holder = await dialBinary(capped.url, "holder")
    const capFrom = capped.logs.length
    const capStarted = Date.now()
    const capStatuses = await attempts(300, () => upgradeStatus(`${capped.url}/v1/client`, {}))
    const capSeconds = (Date.now() - capStarted) / 1000
    expect(capStatuses.filter((s) => s === 503).length).toBe(300)
    const reached = linesOf(capped, capFrom, "connection cap reached")
    expect(reached.length).toBeLessThanOrEqual(Math.ceil(capSeconds) + 1)
    expect(reached[0]!.reason).toBe("per_ip_cap")
    await sleep(1_100)
    expect(await upgradeStatus(`${capped.url}/v1/client`, {})).toBe(503)
    await eventually(() => occurrences(linesOf(capped, capFrom, "connection cap reached")) === 301)
    holder.ws.close()
  }, 60_000)
})
