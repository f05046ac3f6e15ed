/**
 * The one owner of routing state (SPEC §3): server-id → binary (1:1), server-id → phones (1:N, in
 * insertion order), server-id → pending grace (≤ 1). The state and its transitions are the
 * `SlotTable`; this service runs each transition synchronously inside one Effect step, so no
 * other fiber ever sees it half done, and then does what it asks for: sockets are closed only
 * after the transition, all at once (a close handshake can take seconds), then counted and logged.
 *
 * Readers on the hot path (`binaryFor`, `phoneFor`) are synchronous lookups of the local table;
 * an implementation backed by a shared store would keep the same local table as its cache.
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Scope from "effect/Scope"
import { RelayConfig } from "../config/RelayConfig.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { NoServer, PhonesAtCap } from "../domain/Errors.ts"
import type { RegistryUnavailable } from "../domain/Errors.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { type GraceTimer, interruptingTimer } from "./GraceTimer.ts"
import type { BinaryHandle, PhoneHandle } from "./Handles.ts"
import { type GraceToken, SlotTable } from "./SlotTable.ts"

export type ClaimResult =
  | { readonly _tag: "Claimed" }
  | { readonly _tag: "Reclaimed" }
  /** A live binary holds the slot: probe it (SPEC §3.3) before answering. */
  | { readonly _tag: "Conflict"; readonly incumbent: BinaryHandle }
  /** The claiming binary's socket is no longer open: it takes nothing (nothing changed). */
  | { readonly _tag: "Gone" }
  /**
   * Cluster mode: a live binary on another node holds the slot, and this node cannot probe it
   * yet (docs/cluster.md): the newcomer is answered 4409 at once. Never from the in-memory registry.
   */
  | { readonly _tag: "Held" }
  /** Cluster mode: the shared registry did not answer; nothing changed. Never from the in-memory registry. */
  | { readonly _tag: "Unavailable" }

/**
 * `TookOver`: the newcomer holds the slot. `Superseded`: the incumbent no longer holds it (another
 * claim won meanwhile). `Gone`: the newcomer's socket is no longer open; nothing changed.
 * `Unavailable` (cluster mode only): the shared registry did not answer; nothing changed.
 */
export type TakeoverResult = "TookOver" | "Superseded" | "Gone" | "Unavailable"

/** Why a phone could not register; the last only in cluster mode. */
export type RegisterError = NoServer | PhonesAtCap | RegistryUnavailable

export interface Counts {
  /** Held slots not in grace. */
  readonly binaries: number
  /** Every registered phone. */
  readonly phones: number
}

export interface RegistryShape {
  /**
   * First claim wins; a claim on a slot in grace reclaims it (evicting its phones 4404). A binary
   * whose socket is already gone claims nothing.
   */
  readonly claim: (binary: BinaryHandle) => Effect.Effect<ClaimResult>
  /**
   * Replaces `incumbent` by `binary` if `incumbent` still holds the slot (identity) and `binary`'s
   * socket is still open, checked in the same step as the install: cancels any grace, evicts the
   * phones 4404, closes the incumbent 1011 `heartbeat timeout`.
   */
  readonly takeover: (binary: BinaryHandle, incumbent: BinaryHandle) => Effect.Effect<TakeoverResult>
  /** The binary's connection ended: if it still holds its slot, the slot enters grace. */
  readonly release: (binary: BinaryHandle) => Effect.Effect<void>
  /** Registers a phone; `make` builds its handle once the checks pass and its conn_id is issued. */
  readonly registerPhone: (
    serverId: string,
    make: (connId: string, servedBy: BinaryHandle) => PhoneHandle
  ) => Effect.Effect<PhoneHandle, RegisterError>
  /** Removes this phone (identity) if it is still registered. */
  readonly unregisterPhone: (phone: PhoneHandle) => Effect.Effect<void>
  /** The live binary of a server-id; `undefined` when none or in grace. */
  readonly binaryFor: (serverId: string) => BinaryHandle | undefined
  /** A phone of this server-id, by conn_id. */
  readonly phoneFor: (serverId: string, connId: string) => PhoneHandle | undefined
  /** Whether this exact binary connection holds its slot and is not in grace. */
  readonly isLiveHolder: (binary: BinaryHandle) => boolean
  readonly counts: Effect.Effect<Counts>
  /** Shutdown: cancels every grace and closes every registered binary and phone with `close`, concurrently. */
  readonly closeAll: (close: CloseCodes.CloseCode) => Effect.Effect<void>
}

export class Registry extends Context.Service<Registry, RegistryShape>()("pyrycode-relay/Registry") {
  static readonly layer = Layer.effect(
    Registry,
    Effect.gen(function*() {
      const config = yield* RelayConfig
      const scope = yield* Effect.scope
      return yield* makeRegistry({
        gracePeriod: config.gracePeriod,
        maxPhonesPerServer: config.maxPhonesPerServer,
        scope
      })
    })
  )
}

const RECLAIMED: ClaimResult = { _tag: "Reclaimed" }

/** Closes phones from outside; the frames their outboxes discard are counted under `dropped`. */
export const evict = (
  phones: ReadonlyArray<PhoneHandle>,
  close: CloseCodes.CloseCode,
  dropped: Metrics.DropReason
): Effect.Effect<void> =>
  Effect.forEach(
    phones,
    (phone) =>
      Effect.suspend(() =>
        Effect.andThen(Metric.update(Metrics.framesDropped[dropped], phone.outbox.stop("closing")), phone.conn.close(close))
      ),
    { concurrency: "unbounded", discard: true }
  )

export const makeRegistry = (options: {
  readonly gracePeriod: Duration.Duration
  readonly maxPhonesPerServer: number
  readonly scope: Scope.Scope
  /** How graces are scheduled; by default a fiber in `scope`, interrupted when cancelled. */
  readonly graceTimer?: GraceTimer
}): Effect.Effect<RegistryShape> =>
  Effect.sync(() => {
    const timer = options.graceTimer ?? interruptingTimer(options.scope)
    const table = new SlotTable(options.maxPhonesPerServer)

    const publishCounts = Effect.suspend(() =>
      Effect.andThen(
        Metric.update(Metrics.connectedBinaries, table.liveBinaries()),
        Metric.update(Metrics.connectedPhones, table.phones())
      )
    )

    const expire = (serverId: string, token: GraceToken): Effect.Effect<void> =>
      Effect.suspend(() => {
        const expired = table.expire(serverId, token)
        if (expired === undefined) return Effect.void
        return Effect.gen(function*() {
          yield* publishCounts
          yield* evict(expired.phones, CloseCodes.Normal, "grace_expired")
          yield* Metric.update(Metrics.graceExpiries, 1)
          yield* Log.info("grace expired", { server_id: serverId, binary_conn_id: expired.binary.connId })
        })
      })

    const claim = (binary: BinaryHandle): Effect.Effect<ClaimResult> =>
      Effect.suspend((): Effect.Effect<ClaimResult> => {
        const claimed = table.claim(binary)
        const fields = { server_id: binary.serverId, binary_conn_id: binary.connId, binary_version: binary.version }
        switch (claimed._tag) {
          case "Claimed":
            return Effect.as(Effect.andThen(publishCounts, Log.info("server claimed", fields)), claimed)
          case "Reclaimed":
            return Effect.gen(function*() {
              yield* publishCounts
              yield* evict(claimed.phones, CloseCodes.Reclaimed, "evicted")
              yield* Metric.update(Metrics.graceReclaims, 1)
              yield* Log.info("grace reclaimed", fields)
              return RECLAIMED
            })
          case "Conflict":
          case "Gone":
            return Effect.succeed(claimed)
        }
      })

    const takeover = (binary: BinaryHandle, incumbent: BinaryHandle): Effect.Effect<TakeoverResult> =>
      Effect.suspend((): Effect.Effect<TakeoverResult> => {
        const took = table.takeover(binary, incumbent)
        if (typeof took === "string") return Effect.succeed(took)
        return Effect.gen(function*() {
          yield* publishCounts
          yield* Effect.all([
            evict(took.phones, CloseCodes.Reclaimed, "evicted"),
            incumbent.conn.close(CloseCodes.HeartbeatTimeout)
          ], { concurrency: "unbounded", discard: true })
          yield* Metric.update(Metrics.takeovers, 1)
          yield* Log.info("server takeover", {
            server_id: binary.serverId,
            binary_conn_id: binary.connId,
            binary_version: binary.version
          })
          return "TookOver" as const
        })
      })

    const release = (binary: BinaryHandle): Effect.Effect<void> =>
      Effect.suspend(() => {
        const token = table.release(binary)
        if (token === undefined) return Effect.void
        return Effect.gen(function*() {
          token.cancel = yield* timer.start(options.gracePeriod, expire(binary.serverId, token))
          yield* publishCounts
          yield* Log.info("server released", {
            server_id: binary.serverId,
            binary_conn_id: binary.connId,
            duration: Duration.format(options.gracePeriod)
          })
        })
      })

    const registerPhone = (
      serverId: string,
      make: (connId: string, servedBy: BinaryHandle) => PhoneHandle
    ): Effect.Effect<PhoneHandle, NoServer | PhonesAtCap> =>
      Effect.suspend((): Effect.Effect<PhoneHandle, NoServer | PhonesAtCap> => {
        const phone = table.register(serverId, make)
        if (phone === "NoServer") return Effect.fail(new NoServer())
        if (phone === "PhonesAtCap") return Effect.fail(new PhonesAtCap())
        return Effect.as(
          Effect.andThen(
            publishCounts,
            Log.info("phone registered", {
              server_id: serverId,
              conn_id: phone.connId,
              ...(phone.deviceName === undefined ? {} : { device_name: phone.deviceName })
            })
          ),
          phone
        )
      })

    const unregisterPhone = (phone: PhoneHandle): Effect.Effect<void> =>
      Effect.suspend(() =>
        table.unregister(phone)
          ? Effect.andThen(publishCounts, Log.info("phone unregistered", { server_id: phone.serverId, conn_id: phone.connId }))
          : Effect.void
      )

    const closeAll = (close: CloseCodes.CloseCode): Effect.Effect<void> =>
      Effect.suspend(() => {
        const { binaries, phones } = table.stopGraces()
        return Effect.all([
          evict(phones, close, "shutdown"),
          Effect.forEach(binaries, (binary) => binary.conn.close(close), { concurrency: "unbounded", discard: true })
        ], { concurrency: "unbounded", discard: true })
      })

    return {
      claim,
      takeover,
      release,
      registerPhone,
      unregisterPhone,
      binaryFor: (serverId) => table.binaryFor(serverId),
      phoneFor: (serverId, connId) => table.phoneFor(serverId, connId),
      isLiveHolder: (binary) => table.isLiveHolder(binary),
      counts: Effect.sync((): Counts => ({ binaries: table.liveBinaries(), phones: table.phones() })),
      closeAll
    } satisfies RegistryShape
  })
