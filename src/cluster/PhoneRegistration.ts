/**
 * Phones joining and leaving in cluster mode (SPEC §3.6, CLUSTER.md §2.2): a phone registers on
 * any node while its server-id is held anywhere. Redis keeps the cluster-wide exact cap (the
 * `register` script) and answers the claim the phone is served by; a phone of this node's own
 * claim joins the local table, a phone of another node's claim joins that claim's remote slot
 * here (`RemoteSlots`), whose node is told before any of its frames.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { NoServer, PhonesAtCap, RegistryUnavailable } from "../domain/Errors.ts"
import * as Log from "../observability/Log.ts"
import type { BinaryHandle, PhoneHandle } from "../registry/Handles.ts"
import { evict, type RegisterError } from "../registry/Registry.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import type { NodeSlots } from "./NodeSlots.ts"
import type { RegisterReply } from "./Ownership.ts"

/** A conn_id clash with another node's phone of the slot is redrawn at most this often. */
const CONN_ID_DRAWS = 3
/**
 * How long a phone whose server-id Redis does not know yet waits before it is asked once more.
 * A binary's claim is a Redis round trip after its 101 (on this node or another), so a phone that
 * follows its binary at once — both reconnecting after a drain, or a client that dials them
 * together — can reach Redis first; a single process has no such window. The wait is outside the
 * server-id's lock, so the claim it waits for is not held up by it.
 */
const CLAIM_IN_FLIGHT = Duration.millis(250)

type Make = (connId: string, servedBy: BinaryHandle) => PhoneHandle
/** Redis's answers that settle a registration (a clash and a full slot are handled alike everywhere). */
type Settled = Exclude<RegisterReply, { readonly _tag: "Duplicate" | "AtCap" }>

export const makePhoneRegistration = (slots: NodeSlots, maxPhonesPerServer: number) => {
  const { table, claims, lock, store, remote } = slots

  const registered = (serverId: string, phone: PhoneHandle) =>
    Effect.gen(function*() {
      yield* slots.publishCounts
      if (slots.closing !== undefined) yield* evict([phone], slots.closing, "shutdown")
      yield* Log.info("phone registered", {
        server_id: serverId,
        conn_id: phone.connId,
        ...(phone.deviceName === undefined ? {} : { device_name: phone.deviceName })
      })
      return phone
    })

  /**
   * Draws conn_ids until Redis settles one: a clash with another node's phone of the slot is
   * drawn again, at most `CONN_ID_DRAWS` times, and a full slot is `PhonesAtCap`. `draw` issues a
   * conn_id and registers it; `settle` takes Redis's other answers.
   */
  const drawConnIds = (
    draw: Effect.Effect<{ readonly connId: string; readonly reply: RegisterReply }, RegisterError>,
    settle: (connId: string, reply: Settled) => Effect.Effect<PhoneHandle, RegisterError>
  ): Effect.Effect<PhoneHandle, RegisterError> =>
    Effect.gen(function*() {
      for (let attempt = 0; attempt < CONN_ID_DRAWS; attempt++) {
        const { connId, reply } = yield* draw
        if (reply._tag === "Duplicate") continue
        if (reply._tag === "AtCap") return yield* new PhonesAtCap()
        return yield* settle(connId, reply)
      }
      return yield* new RegistryUnavailable({ reason: "conn_id clash" })
    })

  /** A phone of this node's claim `epoch`. */
  const registerLocal = (serverId: string, epoch: string, make: Make) =>
    drawConnIds(
      Effect.gen(function*() {
        const live = table.phoneIds(serverId)
        if (live.length >= maxPhonesPerServer) return yield* new PhonesAtCap()
        const connId = table.issueConnId(serverId)
        return { connId, reply: yield* store.register(serverId, connId, maxPhonesPerServer, epoch, live) }
      }),
      (connId, reply) =>
        Effect.gen(function*() {
          switch (reply._tag) {
            case "NoServer":
            case "Moved":
              // Redis is not in step with this node's claim: it is checked again at the next lapse.
              return yield* new RegistryUnavailable({ reason: "out of step" })
            case "Ok": {
              const phone = table.registerAs(serverId, connId, make)
              if (typeof phone === "string") return yield* new PhonesAtCap()
              return yield* registered(serverId, phone)
            }
          }
        })
    )

  /** Not held here: the phone joins whichever claim Redis has, on whichever node (§2.2). */
  const registerRemote = (serverId: string, make: Make) =>
    drawConnIds(
      Effect.gen(function*() {
        const here = remote.get(serverId)?.phones
        const live = here === undefined ? [] : [...here.keys()]
        const connId = table.issueConnId(serverId, (id) => here?.has(id) ?? false)
        return { connId, reply: yield* store.register(serverId, connId, maxPhonesPerServer, "", live) }
      }),
      (connId, reply) =>
        Effect.gen(function*() {
          switch (reply._tag) {
            case "NoServer":
              return yield* new NoServer()
            case "Moved":
              return yield* new RegistryUnavailable({ reason: "out of step" })
            case "Ok": {
              if (reply.node === store.nodeId) {
                // Redis says this node holds it, but nothing here does (a ghost): not served.
                yield* Effect.ignore(store.unregister(serverId, connId))
                return yield* new RegistryUnavailable({ reason: "out of step" })
              }
              const { phone, replaced } = remote.add(serverId, reply.node, reply.epoch, connId, make)
              // A newer claim than the one this node knew: its phones here were reclaimed (their word was lost).
              if (replaced.length > 0) yield* evict(replaced, CloseCodes.Reclaimed, "evicted")
              return yield* registered(serverId, phone)
            }
          }
        })
    )

  const attempt = (serverId: string, make: Make): Effect.Effect<PhoneHandle, RegisterError> =>
    lock(
      serverId,
      Effect.suspend(() => {
        const held = claims.get(serverId)
        return held === undefined ? registerRemote(serverId, make) : registerLocal(serverId, held.epoch, make)
      })
    )

  const registerPhone = (serverId: string, make: Make): Effect.Effect<PhoneHandle, RegisterError> =>
    attempt(serverId, make).pipe(
      Effect.catchTag("NoServer", () => Effect.andThen(Effect.sleep(CLAIM_IN_FLIGHT), attempt(serverId, make)))
    )

  const unregisterPhone = (phone: PhoneHandle): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (!table.unregister(phone) && !remote.remove(phone)) return Effect.void
      return Effect.gen(function*() {
        yield* slots.publishCounts
        yield* Log.info("phone unregistered", { server_id: phone.serverId, conn_id: phone.connId })
        // No answer: the entry is dropped by the next registration that finds the slot full.
        yield* Effect.ignore(store.unregister(phone.serverId, phone.connId))
      })
    })

  return { registerPhone, unregisterPhone }
}
