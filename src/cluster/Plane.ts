/**
 * The cross-node plane (CLUSTER.md §3): one inbox channel per node, `<prefix>:inbox:<node-id>`.
 * What a node has for another is queued per destination and published at the end of the
 * event-loop turn as one batch (`Wire.ts`): one `PUBLISH` per destination per turn, whatever the
 * number of messages. Each destination's queue is bounded by bytes; a message that does not fit
 * is dropped and counted (`queue_full`), as are the messages of a batch Redis did not take
 * (`redis_down`) or that reached no subscriber (`node_gone`: the node is gone — and a probe
 * waiting on it is answered at once).
 *
 * It carries the conflict probe through the holder's node, the word that a claim was taken over,
 * and the data plane (`Wire.Relayed`: frames, joins, leaves, closes between a phone's node and its
 * binary's), handed to the registry one batch at a time, in order.
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import { atTurnEnd } from "../node/TurnEnd.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { ClusterRedisShape } from "./ClusterRedis.ts"
import type * as Wire from "./Wire.ts"
import { decode } from "./WireReader.ts"
import { BatchWriter, recordSize } from "./WireWriter.ts"

/** What this node answers for the others. */
export interface PlaneHandlers {
  /** The conflict probe, here: whether the live binary of claim `epoch` answered a ping in time. */
  readonly probeLocal: (serverId: string, epoch: string) => Effect.Effect<boolean>
  /** Another node took claim `epoch` over: its binary and phones here are closed as in a takeover. */
  readonly claimLost: (serverId: string, epoch: string) => Effect.Effect<void>
  /**
   * A batch's data-plane records, in order. Handled synchronously (so order holds across
   * batches); what may wait (counting, closing) is returned, and run after.
   */
  readonly relay: (messages: ReadonlyArray<Wire.Relayed>) => Effect.Effect<void> | undefined
}

/** `gone`: nobody listens on that node's inbox (the node is dead). */
export type ProbeAnswer = "alive" | "dead" | "gone"

export interface PlaneShape {
  /** Asks `node` to probe its binary of claim `epoch`; `dead` too when no answer comes within `timeout`. */
  readonly probe: (node: string, serverId: string, epoch: string, timeout: Duration.Duration) => Effect.Effect<ProbeAnswer>
  /** Tells `node` that this node took claim `epoch` over (queued, best effort). */
  readonly tellLost: (node: string, serverId: string, epoch: string) => void
  /**
   * Queues a record for `node`, behind everything queued for it before. `false` when it did not
   * fit in the destination's queue (dropped, counted `queue_full`).
   */
  readonly send: (node: string, message: Wire.Outgoing) => boolean
}

/** How soon a probe is sent again to a node that holds its lease but had nobody on its inbox. */
const ASK_AGAIN = Duration.millis(250)
/** How long one probe waits for its answer before it is sent again (until the probe's own timeout). */
const ASK_WINDOW_MILLIS = 1_000
/** How long a node that holds its lease may have nobody on its inbox before it counts as gone. */
export const RECONNECT_ALLOWANCE = Duration.seconds(2)
/**
 * After this node's own Redis connection started afresh (Redis restarted, a blip), every other
 * node's inbox subscriber is reconnecting too, at its own backoff: for this long nobody on an
 * inbox says nothing about its node, and a probe waits for an answer up to its own timeout rather
 * than taking over a live binary whose node has not resubscribed yet (CLUSTER.md §2.1, §2.8).
 */
export const SUBSCRIBERS_SETTLE = Duration.seconds(10)

/** Bytes queued for one destination before messages for it are dropped. */
export const QUEUE_BYTES = 8 * 1024 * 1024

interface Batch {
  readonly node: string
  readonly writer: BatchWriter
  /** The client wrote it (or it was given up): records for its node go to a new batch. */
  taken: boolean
  /** Its `PUBLISH` failed: its records are counted dropped (`redis_down`), and none are sent. */
  failed: boolean
}

const EMPTY = Buffer.alloc(0)

/** A batch's first buffer; it grows as records come (a busy turn's batch is tens of kB). */
const BATCH_START_BYTES = 16 * 1024
/** A buffer kept for a destination's next batch at most this large (a burst's is let go). */
const SPARE_MAX_BYTES = 1024 * 1024

export const inboxChannel = (prefix: string, nodeId: string): string => `${prefix}:inbox:${nodeId}`

export const makePlane = (options: {
  readonly redis: ClusterRedisShape
  readonly prefix: string
  readonly nodeId: string
  /** Read when a message arrives (the registry is built after the plane; until then, none). */
  readonly handlers: () => PlaneHandlers | undefined
  /** Whether a node holds its lease: a node whose inbox nobody listens on is gone only if not. */
  readonly nodeAlive: (node: string) => Effect.Effect<boolean, unknown>
}): Effect.Effect<PlaneShape, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { redis, nodeId } = options
    const fibers = yield* FiberSet.make()
    const run = yield* FiberSet.runtime(fibers)()
    /** Per destination, the batch still taking records (published, not yet written). */
    const open = new Map<string, Batch>()
    /** Per destination, the buffer of its last batch Redis answered: the next batch's, so busy turns allocate none. */
    const spare = new Map<string, Buffer>()
    /**
     * Probes waiting for an answer, by probe id. The ids one probe sent again share one entry,
     * whose `answer` is the current ask's: an answer to any of them completes it.
     */
    const pending = new Map<number, { readonly node: string; answer: Deferred.Deferred<ProbeAnswer | "unanswered"> }>()
    let nextId = 0
    /**
     * `Clock` time of this node's last fresh start of its Redis connection after the plane began
     * (a restart or blip everyone saw; the connection made at boot is not one: the other nodes'
     * inboxes were not reconnecting then).
     */
    let freshStart = Number.NEGATIVE_INFINITY
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(
      redis.nextGeneration,
      Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => void (freshStart = now)))
    )))

    const drop = (reason: Metrics.ClusterDropReason, messages: number) =>
      Metric.update(Metrics.clusterFramesDropped[reason], messages)

    /** Every probe waiting on `node` learns that it is gone. */
    const gone = (node: string) => {
      for (const [id, waiting] of pending) {
        if (waiting.node !== node) continue
        pending.delete(id)
        Deferred.doneUnsafe(waiting.answer, Effect.succeed("gone" as const))
      }
    }

    /**
     * A batch is published by its first record: the `PUBLISH` is queued at once and takes every
     * record queued for its node until the client writes it, at the end of the turn (then it is
     * `taken`, and the node's next record starts a new batch behind it). Queued that early, it is
     * written in the same turn's check phase — a `PUBLISH` queued from there would wait a turn.
     * A batch that failed without being taken (Redis unreachable, or not written by its deadline)
     * takes the rest of the turn's records for its node, and is counted dropped with them.
     */
    const publish = (node: string, batch: Batch) =>
      Effect.gen(function*() {
        const receivers = yield* Effect.exit(redis.publish(inboxChannel(options.prefix, node), () => take(node, batch)))
        if (receivers._tag === "Failure") {
          batch.failed = true
          if (batch.taken) return yield* drop("redis_down", batch.writer.records)
          failedOpen.add(batch)
          return atTurnEnd(sweepFailed)
        }
        const messages = batch.writer.records
        // Answered, so written whole: the next batch for `node` may write over it.
        if (batch.writer.buffer.length <= SPARE_MAX_BYTES) spare.set(node, batch.writer.buffer)
        if (receivers.value === 0) {
          gone(node)
          return yield* drop("node_gone", messages)
        }
        yield* Metric.update(Metrics.clusterMessages.out, messages)
      })

    /** The batch's bytes as the client writes them; a failed batch's are counted dropped, so none go. */
    const take = (node: string, batch: Batch): Buffer => {
      batch.taken = true
      if (open.get(node) === batch) open.delete(node)
      return batch.failed ? EMPTY : batch.writer.bytes()
    }

    const failedOpen = new Set<Batch>()
    const sweepFailed = {
      turnEnded: () => {
        for (const batch of failedOpen) {
          if (open.get(batch.node) === batch) open.delete(batch.node)
          batch.taken = true
          run(drop("redis_down", batch.writer.records))
        }
        failedOpen.clear()
      }
    }

    const send = (node: string, message: Wire.Outgoing): boolean => {
      let batch = open.get(node)
      const started = batch === undefined
      if (batch === undefined) {
        batch = { node, writer: new BatchWriter(spare.get(node) ?? BATCH_START_BYTES), taken: false, failed: false }
        spare.delete(node)
        open.set(node, batch)
      }
      if (batch.writer.length + recordSize(message) > QUEUE_BYTES) {
        run(drop("queue_full", 1))
        return false
      }
      batch.writer.write(message)
      if (started) run(publish(node, batch))
      return true
    }

    const receive = (batch: Buffer): void => {
      const { messages, dropped } = decode(batch)
      run(Metric.update(Metrics.clusterMessages.in, messages.length))
      // Only nodes publish here; a batch cut short is a bug or a foreign publisher, said once per batch.
      if (dropped > 0) run(Log.warn("cluster batch malformed"))
      let relayed: Array<Wire.Relayed> | undefined
      for (const message of messages) {
        switch (message._tag) {
          case "ProbeAnswer": {
            const waiting = pending.get(message.id)
            if (waiting === undefined) break
            pending.delete(message.id)
            Deferred.doneUnsafe(waiting.answer, Effect.succeed(message.alive ? "alive" as const : "dead" as const))
            break
          }
          case "Probe": {
            const handlers = options.handlers()
            const alive = handlers === undefined ? Effect.succeed(false) : handlers.probeLocal(message.serverId, message.epoch)
            run(Effect.map(alive, (alive) => send(message.replyTo, { _tag: "ProbeAnswer", id: message.id, alive })))
            break
          }
          case "ClaimLost": {
            const handlers = options.handlers()
            if (handlers !== undefined) run(handlers.claimLost(message.serverId, message.epoch))
            break
          }
          default:
            ;(relayed ??= []).push(message)
        }
      }
      if (relayed === undefined) return
      const after = options.handlers()?.relay(relayed)
      if (after !== undefined) run(after)
    }

    yield* redis.subscribe(inboxChannel(options.prefix, nodeId), receive)

    /** Sends one more Probe of `waiting`'s probe and waits up to `window` for any of its answers. */
    const ask = (
      waiting: { readonly node: string; answer: Deferred.Deferred<ProbeAnswer | "unanswered"> },
      ids: Array<number>,
      serverId: string,
      epoch: string,
      window: Duration.Duration
    ) =>
      Effect.gen(function*() {
        const id = nextId = (nextId + 1) >>> 0
        waiting.answer = yield* Deferred.make<ProbeAnswer | "unanswered">()
        pending.set(id, waiting)
        ids.push(id)
        send(waiting.node, { _tag: "Probe", id, serverId, epoch, replyTo: nodeId })
        return yield* Deferred.await(waiting.answer).pipe(
          Effect.timeoutOrElse({ duration: window, orElse: () => Effect.succeed("unanswered" as const) })
        )
      })

    /**
     * Nobody on the node's inbox: gone if its lease lapsed too. A node that still holds its lease
     * may be reconnecting its inbox (Redis restarted, a blip): it is asked again for up to
     * `RECONNECT_ALLOWANCE`, then counted gone (a killed node's lease outlives it by up to a TTL)
     * — unless this node's own connection started afresh less than `SUBSCRIBERS_SETTLE` ago: then
     * every inbox may still be reconnecting, and only an answer or the timeout decides.
     */
    const probe = (node: string, serverId: string, epoch: string, timeout: Duration.Duration) => {
      const ids: Array<number> = []
      return Effect.gen(function*() {
        const start = yield* Clock.currentTimeMillis
        const deadline = start + Duration.toMillis(timeout)
        const waiting = { node, answer: yield* Deferred.make<ProbeAnswer | "unanswered">() }
        while (true) {
          const now = yield* Clock.currentTimeMillis
          if (now >= deadline) return "dead" as const
          // Asked again each ASK_WINDOW: a probe or its answer published while either inbox was
          // reconnecting (a Redis restart) is lost with it, and must not cost a live binary its claim.
          const answer = yield* ask(waiting, ids, serverId, epoch, Duration.millis(Math.min(deadline - now, ASK_WINDOW_MILLIS)))
          if (answer === "unanswered") continue
          if (answer !== "gone") return answer
          const alive = yield* Effect.orElseSucceed(options.nodeAlive(node), () => true)
          const later = yield* Clock.currentTimeMillis
          const settled = later - freshStart >= Duration.toMillis(SUBSCRIBERS_SETTLE)
          if (!alive || (settled && later - start >= Duration.toMillis(RECONNECT_ALLOWANCE))) return "gone" as const
          yield* Effect.sleep(ASK_AGAIN)
        }
      }).pipe(Effect.ensuring(Effect.sync(() => {
        for (const id of ids) pending.delete(id)
      })))
    }

    return {
      probe,
      tellLost: (node, serverId, epoch) => void send(node, { _tag: "ClaimLost", serverId, epoch }),
      send
    } satisfies PlaneShape
  })
