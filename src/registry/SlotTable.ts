/**
 * The registry's table (SPEC §3.1): server-id → slot { binary, grace?, phones }. Every
 * transition is one synchronous method that changes the table and returns what must happen
 * because of it (phones to close, a grace token to arm); nothing here closes a socket, logs,
 * counts or sleeps — the `Registry` does that after the transition, so no fiber ever observes a
 * transition half done.
 *
 * State ownership: `slots` and the two counts belong to this table; the registry owns the table.
 */
import { makePhoneConnIds } from "../domain/ConnId.ts"
import type { BinaryHandle, PhoneHandle } from "./Handles.ts"

/** One armed grace. The slot holds its token; the expiry acts only if the slot still holds it. */
export interface GraceToken {
  /** Stops the timer (set once it has started). */
  cancel: (() => void) | undefined
}

interface Slot {
  binary: BinaryHandle
  /** Set while the slot is in grace; the pending expiry acts only if this is still its token. */
  grace: GraceToken | undefined
  readonly phones: Map<string, PhoneHandle>
}

/** A claim's transition: `phones` were removed from the table (a reclaim) and must be closed. */
export type TableClaim =
  | { readonly _tag: "Claimed" }
  | { readonly _tag: "Reclaimed"; readonly phones: ReadonlyArray<PhoneHandle> }
  | { readonly _tag: "Conflict"; readonly incumbent: BinaryHandle }
  | { readonly _tag: "Gone" }

export type TableTakeover = { readonly _tag: "TookOver"; readonly phones: ReadonlyArray<PhoneHandle> } | "Superseded" | "Gone"

const CLAIMED: TableClaim = { _tag: "Claimed" }
const GONE: TableClaim = { _tag: "Gone" }

export class SlotTable {
  private readonly slots = new Map<string, Slot>()
  private readonly connIds = makePhoneConnIds()
  private readonly maxPhonesPerServer: number
  /** Slots in grace. */
  private graced = 0
  /** Registered phones, every slot. */
  private phoneCount = 0

  constructor(maxPhonesPerServer: number) {
    this.maxPhonesPerServer = maxPhonesPerServer
  }

  /** Held slots not in grace. */
  liveBinaries(): number {
    return this.slots.size - this.graced
  }

  phones(): number {
    return this.phoneCount
  }

  /**
   * First claim wins; a claim on a slot in grace reclaims it: the grace is cancelled and every
   * phone removed before this returns. A binary whose socket is already gone takes nothing.
   */
  claim(binary: BinaryHandle): TableClaim {
    if (!binary.conn.isOpen()) return GONE
    const slot = this.slots.get(binary.serverId)
    if (slot === undefined) {
      this.slots.set(binary.serverId, { binary, grace: undefined, phones: new Map() })
      return CLAIMED
    }
    if (slot.grace === undefined) return { _tag: "Conflict", incumbent: slot.binary }
    this.cancelGrace(slot)
    slot.binary = binary
    return { _tag: "Reclaimed", phones: this.takePhones(slot) }
  }

  /**
   * Installs `binary` if `incumbent` still holds the slot (identity) and `binary`'s socket is
   * still open, checked in the same step as the install; cancels any grace, removes every phone.
   */
  takeover(binary: BinaryHandle, incumbent: BinaryHandle): TableTakeover {
    if (!binary.conn.isOpen()) return "Gone"
    const slot = this.slots.get(binary.serverId)
    if (slot === undefined || slot.binary !== incumbent) return "Superseded"
    this.cancelGrace(slot)
    slot.binary = binary
    return { _tag: "TookOver", phones: this.takePhones(slot) }
  }

  /**
   * The binary's connection ended: if it still holds its slot, the slot enters grace under a fresh
   * token (a grace already armed is cancelled: the newest wins), which is returned for the caller
   * to arm. A displaced connection (reclaimed, taken over) arms nothing.
   */
  release(binary: BinaryHandle): GraceToken | undefined {
    const slot = this.slots.get(binary.serverId)
    if (slot === undefined || slot.binary !== binary) return undefined
    if (slot.grace === undefined) this.graced++
    else slot.grace.cancel?.()
    const token: GraceToken = { cancel: undefined }
    slot.grace = token
    return token
  }

  /**
   * The grace of `token` ran out: only if the slot still holds that very token (identity, not the
   * presence of a grace) is the slot removed, with every phone. `undefined` for a stale fire.
   */
  expire(serverId: string, token: GraceToken): { readonly binary: BinaryHandle; readonly phones: ReadonlyArray<PhoneHandle> } | undefined {
    const slot = this.slots.get(serverId)
    if (slot === undefined || slot.grace !== token) return undefined
    this.slots.delete(serverId)
    this.graced--
    return { binary: slot.binary, phones: this.takePhones(slot) }
  }

  /**
   * Registers a phone on the slot (SPEC §3.6): `make` builds its handle once the checks pass and
   * its conn_id is issued. No slot → "NoServer" (checked first); full → "PhonesAtCap".
   */
  register(
    serverId: string,
    make: (connId: string, servedBy: BinaryHandle) => PhoneHandle
  ): PhoneHandle | "NoServer" | "PhonesAtCap" {
    const slot = this.slots.get(serverId)
    if (slot === undefined) return "NoServer"
    if (slot.phones.size >= this.maxPhonesPerServer) return "PhonesAtCap"
    const phone = make(this.connIds.next(serverId, (connId) => slot.phones.has(connId)), slot.binary)
    slot.phones.set(phone.connId, phone)
    this.phoneCount++
    return phone
  }

  /**
   * Cluster mode: a conn_id for a new phone of `serverId`, never one of the slot's live phones
   * (the shared registry then checks the other nodes' phones of the slot), nor one `taken` says
   * is in use here otherwise (this node's phones of another node's claim).
   */
  issueConnId(serverId: string, taken?: (connId: string) => boolean): string {
    const phones = this.slots.get(serverId)?.phones
    return this.connIds.next(serverId, (connId) => (phones?.has(connId) ?? false) || (taken?.(connId) ?? false))
  }

  /** Cluster mode: `register` with a conn_id issued by `issueConnId` (and accepted by the shared registry). */
  registerAs(
    serverId: string,
    connId: string,
    make: (connId: string, servedBy: BinaryHandle) => PhoneHandle
  ): PhoneHandle | "NoServer" | "PhonesAtCap" {
    const slot = this.slots.get(serverId)
    if (slot === undefined) return "NoServer"
    if (slot.phones.size >= this.maxPhonesPerServer || slot.phones.has(connId)) return "PhonesAtCap"
    const phone = make(connId, slot.binary)
    slot.phones.set(connId, phone)
    this.phoneCount++
    return phone
  }

  /** The slot's binary and grace token (`undefined` when live), or `undefined` when there is no slot. */
  holderOf(serverId: string): { readonly binary: BinaryHandle; readonly grace: GraceToken | undefined } | undefined {
    return this.slots.get(serverId)
  }

  /** The conn_ids of the slot's phones (cluster mode: what the shared registry may keep of this node's). */
  phoneIds(serverId: string): Array<string> {
    const phones = this.slots.get(serverId)?.phones
    return phones === undefined ? [] : [...phones.keys()]
  }

  /**
   * Cluster mode: the shared registry says this slot is no longer this node's (another claim won
   * elsewhere). The slot is removed, grace and all; its binary and phones are returned, to close.
   */
  drop(serverId: string): { readonly binary: BinaryHandle; readonly phones: ReadonlyArray<PhoneHandle> } | undefined {
    const slot = this.slots.get(serverId)
    if (slot === undefined) return undefined
    this.cancelGrace(slot)
    this.slots.delete(serverId)
    return { binary: slot.binary, phones: this.takePhones(slot) }
  }

  /** Every binary that holds its slot live (cluster mode's drain hands them to grace first). */
  liveHolders(): Array<BinaryHandle> {
    const binaries: Array<BinaryHandle> = []
    for (const slot of this.slots.values()) if (slot.grace === undefined) binaries.push(slot.binary)
    return binaries
  }

  /** Removes this phone (identity) if it is still registered; `false` if it was not. */
  unregister(phone: PhoneHandle): boolean {
    const slot = this.slots.get(phone.serverId)
    if (slot === undefined || slot.phones.get(phone.connId) !== phone) return false
    slot.phones.delete(phone.connId)
    this.phoneCount--
    return true
  }

  /** The live binary of a server-id; `undefined` when none or in grace. */
  binaryFor(serverId: string): BinaryHandle | undefined {
    const slot = this.slots.get(serverId)
    return slot === undefined || slot.grace !== undefined ? undefined : slot.binary
  }

  phoneFor(serverId: string, connId: string): PhoneHandle | undefined {
    return this.slots.get(serverId)?.phones.get(connId)
  }

  isLiveHolder(binary: BinaryHandle): boolean {
    const slot = this.slots.get(binary.serverId)
    return slot !== undefined && slot.binary === binary && slot.grace === undefined
  }

  /**
   * Shutdown: every grace timer is stopped, but its slot stays in grace (its binary is gone, so it
   * must not count as connected while the drain runs); a fresh token no timer holds makes a racing
   * fire stale. Returns every binary and phone, all to be closed; the table keeps them.
   */
  stopGraces(): { readonly binaries: ReadonlyArray<BinaryHandle>; readonly phones: ReadonlyArray<PhoneHandle> } {
    const binaries: Array<BinaryHandle> = []
    const phones: Array<PhoneHandle> = []
    for (const slot of this.slots.values()) {
      if (slot.grace !== undefined) {
        slot.grace.cancel?.()
        slot.grace = { cancel: undefined }
      }
      binaries.push(slot.binary)
      for (const phone of slot.phones.values()) phones.push(phone)
    }
    return { binaries, phones }
  }

  private cancelGrace(slot: Slot): void {
    const token = slot.grace
    if (token === undefined) return
    slot.grace = undefined
    this.graced--
    token.cancel?.()
  }

  /** Removes every phone of the slot from the table (before anyone is closed). */
  private takePhones(slot: Slot): Array<PhoneHandle> {
    const phones = [...slot.phones.values()]
    slot.phones.clear()
    this.phoneCount -= phones.length
    return phones
  }
}
