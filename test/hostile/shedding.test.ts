/**
 * The relay-wide memory bound is fair (SPEC §7.4): when `--max-buffered-bytes` is reached, the
 * largest backlogs are shed first, so phones that stopped reading never cost a healthy phone of
 * another server-id its connection.
 *
 * The scenario that once closed the healthy phone `1011 phone backlog full` in some runs: a
 * 1 MiB relay-wide budget, 512 KiB per outbox, three phones of server-id A that stopped reading
 * while their binary floods them with 1 KiB frames, and one phone of server-id B that reads
 * everything its binary sends it in 32 KiB frames. Several rounds of stalled phones, one relay
 * and one reading phone for all of them: the reading phone must get every frame, in order, and
 * stay open throughout.
 */
import type * as Net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { rawUpgrade, textFrame } from "../../bench/lib/raw.ts"
import { dialBinary, dialPhone, envelopes, type Peer, sleep } from "../support/Peers.ts"
import { killTracked, startTrackedRelay as startRelay } from "../support/RelayProcess.ts"

afterEach(killTracked)

let n = 0
const sid = (tag: string) => `shed-${tag}-${process.pid}-${++n}`

const phoneHeaders = (serverId: string) => ({
  "X-Pyrycode-Server": serverId,
  "X-Pyrycode-Token": "shed-token",
  "User-Agent": "shed-phone"
})

/** Waits until the client's own send buffer is small (so we load the relay, not ourselves). */
const drainClient = async (ws: WebSocket) => {
  while (ws.readyState === WebSocket.OPEN && ws.bufferedAmount > 256 * 1024) await sleep(1)
}

/** `/metrics` as `series → value`. */
const scrape = async (url: string): Promise<Map<string, number>> => {
  const out = new Map<string, number>()
  for (const line of (await (await fetch(url)).text()).split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue
    const at = line.lastIndexOf(" ")
    out.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return out
}
const dropped = (reason: string) => `pyrycode_relay_frames_dropped_total{direction="binary_to_phone",reason="${reason}"}`

const ROUNDS = 6
/** Bytes the binary floods towards each stalled phone per round: past the kernel's socket buffers and the outbox. */
const FLOOD_BYTES_PER_PHONE = 8 * 1024 * 1024
const SMALL = `"${"s".repeat(1024 - 2)}"`
/** 32 KiB frames towards the reading phone, at most `WINDOW` of them not yet received. */
const BIG_PAD = "r".repeat(32 * 1024 - 40)
const WINDOW = 4
const PER_ROUND = 20

/** Learns the conn_id of each phone from the first frame it sent (`"<name>"`). */
const connIdOf = (binary: Peer, name: string): string | undefined =>
  envelopes(binary).find((e) => e.frame === name)?.conn_id as string | undefined

describe("the relay-wide budget sheds the largest backlogs first", () => {
  it("a reading phone of another server-id gets every frame and is never closed while stalled phones fill the budget", async () => {
    const relay = await startRelay(["--max-buffered-bytes", "1MiB", "--phone-outbox-bytes", "512KiB"])
    const serverA = sid("stalled")
    const serverB = sid("reading")
    const binaryA = await dialBinary(relay.url, serverA)
    const binaryB = await dialBinary(relay.url, serverB)
    const reader = await dialPhone(relay.url, serverB)
    reader.send(`"reader"`)
    await binaryB.waitFor(1)
    const readerId = connIdOf(binaryB, "reader")!
    let readerClose: { code: number; reason: string } | undefined
    void reader.closed.then((c) => (readerClose = c))

    // The relay-wide gauge, sampled throughout: the bound holds.
    let maxBuffered = 0
    let watching = true
    const watch = (async () => {
      while (watching) {
        maxBuffered = Math.max(maxBuffered, (await scrape(relay.metricsUrl)).get("pyrycode_relay_buffered_bytes") ?? 0)
        await sleep(20)
      }
    })()
    let sentToReader = 0
    let rounds = 0
    const stalledSockets: Array<Net.Socket> = []
    for (let round = 0; round < ROUNDS && readerClose === undefined; round++, rounds++) {
      // Three phones of server-id A that send one frame (so the binary learns their conn_ids)
      // and then never read again.
      const names = [0, 1, 2].map((i) => `stalled-${round}-${i}`)
      const stalled = await Promise.all(names.map(() => rawUpgrade(relay.port, "/v1/client", phoneHeaders(serverA))))
      stalledSockets.push(...stalled)
      stalled.forEach((socket, i) => socket.write(textFrame(`"${names[i]}"`)))
      const before = binaryA.messages.length
      await binaryA.waitFor(before + 3)
      const stalledIds = names.map((name) => connIdOf(binaryA, name)!)

      let flooding = true
      const flood = (async () => {
        for (let sent = 0; sent < FLOOD_BYTES_PER_PHONE; sent += SMALL.length) {
          for (const id of stalledIds) binaryA.send(`{"conn_id":"${id}","frame":${SMALL}}`)
          if ((sent / SMALL.length) % 16 === 15) await drainClient(binaryA.ws)
        }
        await drainClient(binaryA.ws)
        flooding = false
      })()
      // The reading phone's stream runs for as long as the flood does, and for at least
      // `PER_ROUND` frames.
      const roundStart = sentToReader
      const stream = (async () => {
        const more = () => flooding || sentToReader - roundStart < PER_ROUND
        while ((more() || reader.messages.length < sentToReader) && readerClose === undefined) {
          if (sentToReader - reader.messages.length < WINDOW && more()) {
            binaryB.send(`{"conn_id":"${readerId}","frame":{"seq":${sentToReader},"pad":"${BIG_PAD}"}}`)
            sentToReader++
          } else await sleep(1)
        }
      })()
      await Promise.all([flood, stream])
    }

    watching = false
    await watch
    const metrics = await scrape(relay.metricsUrl)
    const shedLines = relay.logs.filter((l) => l.includes("backlog shed")).length
    console.log(JSON.stringify({
      case: "fair shedding",
      rounds,
      framesToReader: sentToReader,
      readerClose: readerClose ?? null,
      maxBuffered,
      shedLines,
      backlogFull: metrics.get(dropped("backlog_full"))
    }))
    expect(readerClose).toBeUndefined()
    expect(reader.ws.readyState).toBe(WebSocket.OPEN)
    const seqs = reader.messages.map((m) => (JSON.parse(m) as { seq?: number }).seq)
    expect(seqs).toEqual(Array.from({ length: sentToReader }, (_, i) => i))
    expect(sentToReader).toBeGreaterThanOrEqual(ROUNDS * PER_ROUND)
    // The budget was reached and larger backlogs were shed, yet it was never passed.
    expect(shedLines).toBeGreaterThanOrEqual(1)
    expect(relay.logs.filter((l) => l.includes("backlog shed") && l.includes(serverB))).toEqual([])
    expect(metrics.get(dropped("backlog_full"))).toBeGreaterThanOrEqual(1)
    // (Close notices to a binary are sent without asking the ledger: a few dozen bytes each.)
    expect(maxBuffered).toBeLessThanOrEqual(1024 * 1024 + 4096)
    // The binaries are untouched.
    expect(binaryA.ws.readyState).toBe(WebSocket.OPEN)
    expect(binaryB.ws.readyState).toBe(WebSocket.OPEN)

    for (const socket of stalledSockets) socket.destroy()
    reader.ws.close()
    binaryA.ws.close()
    binaryB.ws.close()
    expect(await relay.stop()).toBe(0)
  }, 180_000)
})
