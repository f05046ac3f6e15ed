/**
 * Heap left behind by phones of many distinct server-ids (issue 12, item 7): for each of N fresh
 * server-ids a binary claims the slot, a phone registers and unregisters, the binary leaves and
 * the grace expires — on the relay's own Registry, in this process, with logs off. Nothing of
 * those server-ids is live afterwards, so the heap must be where it started: anything kept per
 * server-id or per conn_id ever issued shows up as growth.
 *
 *   node bench/conn-id-heap.ts [--server-ids 100000] [--max-growth-bytes N]
 *
 * Runs itself under `--expose-gc --no-flush-bytecode` (without the second flag V8 drops the
 * bytecode of functions idle for a while, and the heap *shrinks* by ~4 MB at random moments).
 * "Before" is taken after a warm-up of 20 000 server-ids (code compiled, pools grown), each
 * reading after several full GCs.
 * Prints one JSON line; with --max-growth-bytes, exits 1 when the heap grew by more.
 */
import { spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { parseArgs } from "node:util"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import type { PeerConnection } from "../src/connection/PeerConnection.ts"
import { envelopePrefix } from "../src/domain/Envelope.ts"
import * as Metrics from "../src/observability/Metrics.ts"
import type { BinaryHandle, PhoneHandle } from "../src/registry/Handles.ts"
import { makeRegistry, type RegistryShape } from "../src/registry/Registry.ts"

const { values } = parseArgs({
  options: {
    "server-ids": { type: "string", default: "100000" },
    "max-growth-bytes": { type: "string" }
  },
  strict: true
})

const NODE_FLAGS = ["--expose-gc", "--no-flush-bytecode"]
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined || !NODE_FLAGS.every((flag) => process.execArgv.includes(flag))) {
  const run = spawnSync(process.execPath, [...NODE_FLAGS, import.meta.filename, ...process.argv.slice(2)], {
    stdio: "inherit"
  })
  process.exit(run.status ?? 1)
}

const SERVER_IDS = Number(values["server-ids"])
const WARMUP = 20_000
const CHUNK = 1_000

/**
 * The Registry only asks a claiming binary's connection whether it is still open; it never
 * touches a connection of a phone that leaves on its own, nor of a binary in grace.
 */
const idleConnection = { isOpen: () => true } as PeerConnection

const binaryHandle = (serverId: string): BinaryHandle => ({
  connId: `server-${serverId}-00000000`,
  serverId,
  version: "bench",
  conn: idleConnection
})

const phoneHandle = (connId: string, servedBy: BinaryHandle): PhoneHandle => ({
  connId,
  serverId: servedBy.serverId,
  deviceName: undefined,
  servedBy,
  conn: idleConnection,
  outbox: undefined as never,
  envelopePrefix: envelopePrefix(connId),
  closedByBinary: false
})

/** One server-id's whole life: claim, one phone in and out, release, grace expiry (0 s). */
const lifeOf = (registry: RegistryShape, serverId: string) =>
  Effect.gen(function*() {
    const binary = binaryHandle(serverId)
    yield* registry.claim(binary)
    const phone = yield* registry.registerPhone(serverId, phoneHandle)
    yield* registry.unregisterPhone(phone)
    yield* registry.release(binary)
  })

const freshServerId = (): string => `bench-${randomBytes(16).toString("hex")}`

const runServerIds = (registry: RegistryShape, count: number, expiredBefore: number) =>
  Effect.gen(function*() {
    for (let done = 0; done < count; done += CHUNK) {
      for (let i = done; i < Math.min(count, done + CHUNK); i++) yield* lifeOf(registry, freshServerId())
      // Let the zero-length graces expire before the next chunk.
      yield* Effect.sleep(Duration.millis(1))
    }
    for (let waited = 0; (yield* Metric.value(Metrics.graceExpiries)).count < expiredBefore + count; waited++) {
      if (waited > 10_000) return yield* Effect.die(new Error("graces did not expire"))
      yield* Effect.sleep(Duration.millis(1))
    }
  })

const heapUsed = (): number => {
  for (let i = 0; i < 4; i++) gc!()
  return process.memoryUsage().heapUsed
}

const program = Effect.gen(function*() {
  const registry = yield* makeRegistry({
    gracePeriod: Duration.zero,
    maxPhonesPerServer: 16,
    scope: yield* Effect.scope
  })
  yield* runServerIds(registry, WARMUP, 0)
  const before = heapUsed()
  yield* runServerIds(registry, SERVER_IDS, WARMUP)
  const after = heapUsed()
  return { before, after }
})

const { after, before } = await Effect.runPromise(
  program.pipe(
    Effect.scoped,
    Effect.provideService(Metric.MetricRegistry, new Map()),
    Effect.provideService(Logger.CurrentLoggers, new Set())
  )
)

const growth = after - before
console.log(JSON.stringify({
  serverIds: SERVER_IDS,
  heapUsedBeforeBytes: before,
  heapUsedAfterBytes: after,
  growthBytes: growth,
  growthPerServerIdBytes: Math.round((growth / SERVER_IDS) * 100) / 100
}))
const limit = values["max-growth-bytes"]
if (limit !== undefined && growth > Number(limit)) process.exit(1)
