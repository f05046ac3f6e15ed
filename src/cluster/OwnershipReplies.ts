/**
 * What each ownership script's answer means (`Scripts.ts` answers with a flat array of strings
 * whose first element says what happened): one typed reply per script, read here and nowhere
 * else. A reply this code does not know (a script of another version?) and a script that ran too
 * late to be trusted (`late`) fail like a call that got no answer: the caller has already given
 * up on it, and the script changed nothing.
 */
import * as Effect from "effect/Effect"
import { RegistryUnavailable } from "../domain/Errors.ts"

/** A phone of the slot, on some node. */
export interface RemotePhone {
  readonly connId: string
  readonly node: string
}

export type ClaimReply =
  | { readonly _tag: "Claimed"; readonly epoch: string }
  | {
    readonly _tag: "Reclaimed"
    readonly epoch: string
    readonly fromNode: string
    readonly fromEpoch: string
    readonly phones: ReadonlyArray<RemotePhone>
  }
  | { readonly _tag: "Conflict"; readonly node: string; readonly epoch: string }

export type TakeoverReply =
  | { readonly _tag: "TookOver"; readonly epoch: string; readonly fromNode: string; readonly phones: ReadonlyArray<RemotePhone> }
  | { readonly _tag: "Superseded" }
  | { readonly _tag: "Missing" }

export type ReleaseReply = { readonly _tag: "Grace"; readonly deadline: number } | { readonly _tag: "Stale" }

export type ExpireReply =
  | { readonly _tag: "Expired"; readonly phones: ReadonlyArray<RemotePhone> }
  | { readonly _tag: "NotDue"; readonly millis: number }
  /** Another claim holds the slot now. */
  | { readonly _tag: "Stale" }
  /** No slot: another node expired it (and counted it), or its keys were lost. */
  | { readonly _tag: "Gone" }

/** `Reaped`: a dead node's live claim entered grace now; `Grace`: it was in grace already. */
export type ReapReply =
  | { readonly _tag: "Reaped" | "Grace"; readonly epoch: string; readonly deadline: number }
  | { readonly _tag: "Other" }

export type RegisterReply =
  | { readonly _tag: "Ok"; readonly epoch: string; readonly node: string }
  | { readonly _tag: "NoServer" }
  | { readonly _tag: "Moved"; readonly epoch: string }
  | { readonly _tag: "Duplicate" }
  | { readonly _tag: "AtCap" }

export type AssertReply =
  | { readonly _tag: "Held" }
  | { readonly _tag: "Restored" }
  | { readonly _tag: "Lost"; readonly node: string; readonly epoch: string }

/** `held`: renewed. `lost`: it had lapsed and is taken again (claims must be checked). `taken`: another process. */
export type LeaseReply = "held" | "lost" | "taken"

const phonesOf = (reply: ReadonlyArray<string>, from: number): Array<RemotePhone> => {
  const phones: Array<RemotePhone> = []
  for (let i = from; i + 1 < reply.length; i += 2) phones.push({ connId: reply[i]!, node: reply[i + 1]! })
  return phones
}

const LATE = new RegistryUnavailable({ reason: "late" })

/** A reply this code does not know (a script of another version?): no answer to trust. */
const unexpected = (reply: unknown) =>
  Effect.fail(new RegistryUnavailable({ reason: reply === "late" ? "late" : "unexpected reply" }))

export const claimReply = (reply: ReadonlyArray<string>): Effect.Effect<ClaimReply, RegistryUnavailable> => {
  switch (reply[0]) {
    case "claimed":
      return Effect.succeed({ _tag: "Claimed", epoch: reply[1]! })
    case "reclaimed":
      return Effect.succeed({
        _tag: "Reclaimed",
        epoch: reply[1]!,
        fromNode: reply[2]!,
        fromEpoch: reply[3]!,
        phones: phonesOf(reply, 4)
      })
    case "conflict":
      return Effect.succeed({ _tag: "Conflict", node: reply[1]!, epoch: reply[2]! })
    case "late":
      return Effect.fail(LATE)
    default:
      return unexpected(reply[0])
  }
}

export const takeoverReply = (reply: ReadonlyArray<string>): Effect.Effect<TakeoverReply, RegistryUnavailable> => {
  switch (reply[0]) {
    case "tookover":
      return Effect.succeed({ _tag: "TookOver", epoch: reply[1]!, fromNode: reply[2]!, phones: phonesOf(reply, 3) })
    case "superseded":
      return Effect.succeed({ _tag: "Superseded" })
    case "missing":
      return Effect.succeed({ _tag: "Missing" })
    default:
      return unexpected(reply[0])
  }
}

export const releaseReply = (reply: ReadonlyArray<string>): Effect.Effect<ReleaseReply, RegistryUnavailable> =>
  reply[0] === "grace"
    ? Effect.succeed({ _tag: "Grace", deadline: Number(reply[1]) })
    : reply[0] === "stale"
    ? Effect.succeed({ _tag: "Stale" })
    : unexpected(reply[0])

export const expireReply = (reply: ReadonlyArray<string>): Effect.Effect<ExpireReply, RegistryUnavailable> => {
  switch (reply[0]) {
    case "expired":
      return Effect.succeed({ _tag: "Expired", phones: phonesOf(reply, 1) })
    case "notdue":
      return Effect.succeed({ _tag: "NotDue", millis: Number(reply[1]) })
    case "stale":
      return Effect.succeed({ _tag: "Stale" })
    case "gone":
      return Effect.succeed({ _tag: "Gone" })
    default:
      return unexpected(reply[0])
  }
}

export const registerReply = (reply: ReadonlyArray<string>): Effect.Effect<RegisterReply, RegistryUnavailable> => {
  switch (reply[0]) {
    case "ok":
      return Effect.succeed({ _tag: "Ok", epoch: reply[1]!, node: reply[2]! })
    case "noserver":
      return Effect.succeed({ _tag: "NoServer" })
    case "moved":
      return Effect.succeed({ _tag: "Moved", epoch: reply[1]! })
    case "duplicate":
      return Effect.succeed({ _tag: "Duplicate" })
    case "atcap":
      return Effect.succeed({ _tag: "AtCap" })
    default:
      return unexpected(reply[0])
  }
}

export const assertReply = (reply: ReadonlyArray<string>): Effect.Effect<AssertReply, RegistryUnavailable> =>
  reply[0] === "held"
    ? Effect.succeed({ _tag: "Held" })
    : reply[0] === "restored"
    ? Effect.succeed({ _tag: "Restored" })
    : reply[0] === "lost"
    ? Effect.succeed({ _tag: "Lost", node: reply[1]!, epoch: reply[2]! })
    : unexpected(reply[0])

export const leaseReply = (reply: string): Effect.Effect<LeaseReply, RegistryUnavailable> =>
  reply === "held" || reply === "lost" || reply === "taken" ? Effect.succeed(reply) : unexpected(reply)

export const reapReply = (reply: ReadonlyArray<string>): Effect.Effect<ReapReply, RegistryUnavailable> =>
  reply[0] === "reaped" || reply[0] === "grace"
    ? Effect.succeed({ _tag: reply[0] === "reaped" ? "Reaped" : "Grace", epoch: reply[1]!, deadline: Number(reply[2]) })
    : reply[0] === "other"
    ? Effect.succeed({ _tag: "Other" })
    : unexpected(reply[0])
