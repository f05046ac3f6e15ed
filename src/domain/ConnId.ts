import { randomBytes } from "node:crypto"

/**
 * Relay-assigned connection ids (SPEC §0): `client-<server-id>-<8 hex>` for phones and
 * `server-<server-id>-<8 hex>` for binaries.
 *
 * A phone's suffix is the next value of a 32-bit counter passed through a keyed permutation
 * (round keys from the CSPRNG, drawn when the registry is built): a bijection, so no suffix
 * repeats before 2^32 phones have registered, with O(1) memory however many server-ids come and
 * go — remembering issued suffixes instead would let strangers grow the relay's memory at will.
 * A binary could otherwise mistake a new phone for one it served before. Binary ids appear only
 * in logs and stay plain CSPRNG draws.
 */

/** A bijection on the unsigned 32-bit integers. */
export type Permutation = (n: number) => number

const ROUNDS = 8

const suffixHex = (n: number): string => n.toString(16).padStart(8, "0")

/** MurmurHash3's finalizer over `half ^ key`, low 16 bits: every input bit reaches every output bit. */
const roundFunction = (half: number, key: number): number => {
  let h = half ^ key
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35)
  return (h ^ (h >>> 16)) & 0xffff
}

/**
 * A balanced Feistel network over the two 16-bit halves of `n`. Each round maps
 * `(left, right)` to `(right, left ^ F(right))`, which is invertible whatever `F` is — so the
 * whole network is a bijection by construction; the keys only decide which one. It is a
 * scrambler, not a cipher: nothing relies on conn_ids being unguessable (a binary only ever
 * addresses the phones of its own slot); the keys keep the registration order out of sight.
 */
export const keyedPermutation = (keys: Uint32Array): Permutation => (n) => {
  let left = n >>> 16
  let right = n & 0xffff
  for (let i = 0; i < keys.length; i++) {
    const next = left ^ roundFunction(right, keys[i]!)
    left = right
    right = next
  }
  return ((left << 16) | right) >>> 0
}

const randomPermutation = (): Permutation => keyedPermutation(new Uint32Array(randomBytes(4 * ROUNDS).buffer))

const EPOCH = 2 ** 32

export interface PhoneConnIds {
  /**
   * A conn_id for a new phone of `serverId`. `isLive` says whether the slot holds a phone with
   * that id right now; such an id is never issued (it can only come up after 2^32 phones, when
   * the keys are renewed).
   */
  readonly next: (serverId: string, isLive: (connId: string) => boolean) => string
}

/**
 * One issuer per registry (no process-wide state). `permutation` makes a fresh permutation for
 * each run of 2^32 counter values; `start` is where the counter begins. Both are for tests.
 */
export const makePhoneConnIds = (options: {
  readonly permutation?: () => Permutation
  readonly start?: number
} = {}): PhoneConnIds => {
  const fresh = options.permutation ?? randomPermutation
  let permute = fresh()
  let counter = options.start ?? 0
  return {
    next: (serverId, isLive) => {
      for (;;) {
        if (counter >= EPOCH) {
          // Past 2^32 phones a suffix may repeat an earlier one (as likely as two random draws);
          // never one of the slot's live phones.
          permute = fresh()
          counter = 0
        }
        const connId = `client-${serverId}-${suffixHex(permute(counter++))}`
        if (!isLive(connId)) return connId
      }
    }
  }
}

export const binaryConnId = (serverId: string): string => `server-${serverId}-${randomBytes(4).toString("hex")}`
