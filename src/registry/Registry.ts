/**
 * The one owner of routing state (SPEC §3): server-id → binary (1:1), server-id → phones (1:N, in
 * insertion order), server-id → pending grace (≤ 1). Every slot transition is a method here and
 * runs synchronously inside one Effect step, so no other fiber ever sees it half done. Sockets
 * are closed only after the transition, all at once (a close handshake can take seconds).
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
import { makePhoneConnIds } from "../domain/ConnId.ts"
import { NoServer, PhonesAtCap } from "../domain/Errors.ts"
import * as Log from "../observability/Log.ts"
import * as Metrics from "../observability/Metrics.ts"
import { type GraceTimer, interruptingTimer } from "./GraceTimer.ts"
import type { BinaryHandle, PhoneHandle } from "./Handles.ts"

export type ClaimResult =
  | { readonly _tag: "Claimed" }
  | { readonly _tag: "Reclaimed" }
  /** A live binary holds the slot: probe it (SPEC §3.3) before answering. */
  | { readonly _tag: "Conflict"; readonly incumbent: BinaryHandle }
  /** The claiming binary's socket is no longer open: it takes nothing (nothing changed). */
  | { readonly _tag: "Gone" }

/**
 * `TookOver`: the newcomer holds the slot. `Superseded`: the incumbent no longer holds it (another
 * claim won meanwhile). `Gone`: the newcomer's socket is no longer open; nothing changed.
 */
export type TakeoverResult = "TookOver" | "Superseded" | "Gone"

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
  ) => Effect.Effect<PhoneHandle, NoServer | PhonesAtCap>
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

/** One armed grace. The slot holds its token; the expiry acts only if the slot still holds it. */
interface GraceToken {
  /** Stops the timer (set once it has started). */
  cancel: (() => void) | undefined
}

interface Slot {
  binary: BinaryHandle
  /** Set while the slot is in grace; the pending expiry acts only if this is still its token. */
  grace: GraceToken | undefined
  readonly phones: Map<string, PhoneHandle>
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

const GONE: ClaimResult = { _tag: "Gone" }

/** Closes phones from outside; the frames their outboxes discard are counted under `dropped`. */
const evict = (
  phones: Iterable<PhoneHandle>,
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
    const slots = new Map<string, Slot>()
    const connIds = makePhoneConnIds()
    let graced = 0
    let phoneCount = 0

    const publishCounts = Effect.suspend(() =>
      Effect.andThen(
        Metric.update(Metrics.connectedBinaries, slots.size - graced),
        Metric.update(Metrics.connectedPhones, phoneCount)
      )
    )

    const cancelGrace = (slot: Slot) => {
      const token = slot.grace
      if (token === undefined) return
      slot.grace = undefined
      graced--
      token.cancel?.()
    }

    /** Removes every phone of the slot from the table (before anyone is closed). */
    const takePhones = (slot: Slot): Array<PhoneHandle> => {
      const phones = [...slot.phones.values()]
      slot.phones.clear()
      phoneCount -= phones.length
      return phones
    }

    const expire = (serverId: string, token: GraceToken): Effect.Effect<void> =>
      Effect.suspend(() => {
        const slot = slots.get(serverId)
        // Stale-fire guard: identity of the token, not presence of a grace.
        if (slot === undefined || slot.grace !== token) return Effect.void
        slots.delete(serverId)
        graced--
        const phones = takePhones(slot)
        return Effect.gen(function*() {
          yield* publishCounts
          yield* evict(phones, CloseCodes.Normal, "grace_expired")
          yield* Metric.update(Metrics.graceExpiries, 1)
          yield* Log.info("grace expired", { server_id: serverId, binary_conn_id: slot.binary.connId })
        })
      })

    const install = (binary: BinaryHandle): Slot => {
      const slot: Slot = { binary, grace: undefined, phones: new Map() }
      slots.set(binary.serverId, slot)
      return slot
    }

    const claim = (binary: BinaryHandle): Effect.Effect<ClaimResult> =>
      Effect.suspend((): Effect.Effect<ClaimResult> => {
        // A binary that left before its claim ran must not take (nor reclaim, evicting phones) anything.
        if (!binary.conn.isOpen()) return Effect.succeed(GONE)
        const slot = slots.get(binary.serverId)
        const fields = { server_id: binary.serverId, binary_conn_id: binary.connId, binary_version: binary.version }
        if (slot === undefined) {
          install(binary)
          return Effect.as(
            Effect.andThen(publishCounts, Log.info("server claimed", fields)),
            { _tag: "Claimed" } as const
          )
        }
        if (slot.grace !== undefined) {
          cancelGrace(slot)
          slot.binary = binary
          const phones = takePhones(slot)
          return Effect.gen(function*() {
            yield* publishCounts
            yield* evict(phones, CloseCodes.Reclaimed, "evicted")
            yield* Metric.update(Metrics.graceReclaims, 1)
            yield* Log.info("grace reclaimed", fields)
            return { _tag: "Reclaimed" } as const
          })
        }
        return Effect.succeed({ _tag: "Conflict", incumbent: slot.binary } as const)
      })

    const takeover = (binary: BinaryHandle, incumbent: BinaryHandle): Effect.Effect<TakeoverResult> =>
      Effect.suspend((): Effect.Effect<TakeoverResult> => {
        // Checked in the same synchronous step as the install: a newcomer that left during the
        // probe never takes the slot, never evicts the incumbent's phones.
        if (!binary.conn.isOpen()) return Effect.succeed("Gone")
        const slot = slots.get(binary.serverId)
        if (slot === undefined || slot.binary !== incumbent) return Effect.succeed("Superseded")
        cancelGrace(slot)
        slot.binary = binary
        const phones = takePhones(slot)
        return Effect.gen(function*() {
          yield* publishCounts
          yield* Effect.all([evict(phones, CloseCodes.Reclaimed, "evicted"), incumbent.conn.close(CloseCodes.HeartbeatTimeout)], {
            concurrency: "unbounded",
            discard: true
          })
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
        const slot = slots.get(binary.serverId)
        // A displaced connection (reclaimed, taken over) must not arm anything.
        if (slot === undefined || slot.binary !== binary) return Effect.void
        if (slot.grace === undefined) graced++
        else slot.grace.cancel?.() // the newest grace wins
        const token: GraceToken = { cancel: undefined }
        slot.grace = token
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
        const slot = slots.get(serverId)
        if (slot === undefined) return Effect.fail(new NoServer())
        if (slot.phones.size >= options.maxPhonesPerServer) return Effect.fail(new PhonesAtCap())
        const phone = make(connIds.next(serverId, (connId) => slot.phones.has(connId)), slot.binary)
        slot.phones.set(phone.connId, phone)
        phoneCount++
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
      Effect.suspend(() => {
        const slot = slots.get(phone.serverId)
        if (slot === undefined || slot.phones.get(phone.connId) !== phone) return Effect.void
        slot.phones.delete(phone.connId)
        phoneCount--
        return Effect.andThen(
          publishCounts,
          Log.info("phone unregistered", { server_id: phone.serverId, conn_id: phone.connId })
        )
      })

    const binaryFor = (serverId: string): BinaryHandle | undefined => {
      const slot = slots.get(serverId)
      return slot === undefined || slot.grace !== undefined ? undefined : slot.binary
    }

    const phoneFor = (serverId: string, connId: string): PhoneHandle | undefined =>
      slots.get(serverId)?.phones.get(connId)

    const isLiveHolder = (binary: BinaryHandle): boolean => {
      const slot = slots.get(binary.serverId)
      return slot !== undefined && slot.binary === binary && slot.grace === undefined
    }

    const counts = Effect.sync((): Counts => ({ binaries: slots.size - graced, phones: phoneCount }))

    const closeAll = (close: CloseCodes.CloseCode): Effect.Effect<void> =>
      Effect.suspend(() => {
        const binaries: Array<BinaryHandle> = []
        const phones: Array<PhoneHandle> = []
        for (const slot of slots.values()) {
          // Stop the grace timer, but the slot stays in grace (its binary is gone, so it must not
          // count as connected while the drain runs). A fresh token no timer holds makes a racing
          // fire stale.
          if (slot.grace !== undefined) {
            slot.grace.cancel?.()
            slot.grace = { cancel: undefined }
          }
          binaries.push(slot.binary)
          for (const phone of slot.phones.values()) phones.push(phone)
        }
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
      binaryFor,
      phoneFor,
      isLiveHolder,
      counts,
      closeAll
    } satisfies RegistryShape
  })
