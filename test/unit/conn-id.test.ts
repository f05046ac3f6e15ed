/**
 * Phone conn_ids (SPEC §0): `client-<server-id>-<8 lowercase hex>`, never repeated, issued with
 * memory that does not depend on how many server-ids or phones came before (issue 12, item 7).
 * The heap measurement itself is bench/conn-id-heap.ts (run by test/e2e/conn-id-heap.test.ts).
 */
import { assert, describe, it } from "@effect/vitest"
import { binaryConnId, keyedPermutation, makePhoneConnIds, type Permutation } from "../../src/domain/ConnId.ts"

const never = () => false

const suffixOf = (connId: string): number => Number.parseInt(connId.slice(-8), 16)

/** The first suffix that repeats among `count` ids of one server-id, or `undefined`. */
const firstRepeat = (next: (serverId: string) => string, count: number): number | undefined => {
  const suffixes = new Uint32Array(count)
  for (let i = 0; i < count; i++) suffixes[i] = suffixOf(next("s"))
  suffixes.sort()
  for (let i = 1; i < count; i++) if (suffixes[i] === suffixes[i - 1]) return suffixes[i]
  return undefined
}

const fixedKeys = new Uint32Array([0x9e3779b9, 0x7f4a7c15, 0xf39cc060, 0x5ced9c3b, 0x1b873593, 0xcc9e2d51, 0xe6546b64, 0x85ebca6b])

describe("phone conn_ids", () => {
  it("1 000 000 consecutive ids of one server-id are all distinct", () => {
    const ids = makePhoneConnIds()
    assert.strictEqual(firstRepeat((s) => ids.next(s, never), 1_000_000), undefined)
  })

  it("the distinctness check catches suffixes that are not a bijection of the counter (random draws, a lossy map)", () => {
    // 1e6 random 32-bit draws repeat with probability 1 - e^-116: the old scheme without its Set.
    const random = makePhoneConnIds({ permutation: () => () => (Math.random() * 2 ** 32) >>> 0 })
    assert.notStrictEqual(firstRepeat((s) => random.next(s, never), 1_000_000), undefined)
    const lossy = keyedPermutation(fixedKeys)
    const truncated = makePhoneConnIds({ permutation: () => (n) => lossy(n) >>> 12 })
    assert.notStrictEqual(firstRepeat((s) => truncated.next(s, never), 1_000_000), undefined)
  })

  it("have the format client-<server-id>-<8 lowercase hex>; binaries get server-<server-id>-<8 hex>", () => {
    const ids = makePhoneConnIds()
    for (const serverId of ["s", "7f3c-a9", "with space", "ünï©ødé", "a-b-c", ""]) {
      const escaped = serverId.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
      for (let i = 0; i < 100; i++) {
        assert.match(ids.next(serverId, never), new RegExp(`^client-${escaped}-[0-9a-f]{8}$`, "u"))
        assert.match(binaryConnId(serverId), new RegExp(`^server-${escaped}-[0-9a-f]{8}$`, "u"))
      }
    }
    // Leading zeros are kept.
    const zero = makePhoneConnIds({ permutation: () => (n) => n })
    assert.strictEqual(zero.next("s", never), "client-s-00000000")
  })

  it("keep nothing per server-id: the n-th id's suffix is the permutation of n, whatever server-ids came before", () => {
    const permute = keyedPermutation(fixedKeys)
    const ids = makePhoneConnIds({ permutation: () => permute })
    for (let n = 0; n < 100_000; n++) {
      const serverId = n % 1000 === 0 ? "same" : `server-${n}`
      const connId = ids.next(serverId, never)
      if (connId !== `client-${serverId}-${permute(n).toString(16).padStart(8, "0")}`) {
        assert.fail(`id ${n}: ${connId}`)
      }
    }
  })

  it("the keys decide the order: two issuers give different sequences, and consecutive suffixes look unrelated", () => {
    const a = makePhoneConnIds()
    const b = makePhoneConnIds()
    const first = Array.from({ length: 1000 }, () => suffixOf(a.next("s", never)))
    const second = Array.from({ length: 1000 }, () => suffixOf(b.next("s", never)))
    assert.notDeepEqual(first, second)
    // A counter shown as is would use 1 value of the top byte; scrambled ids spread over ~250.
    assert.isAbove(new Set(first.map((n) => n >>> 24)).size, 200)
  })

  it("after 2^32 ids the keys are renewed, and an id a live phone of the slot holds is skipped", () => {
    const made: Array<Permutation> = []
    const ids = makePhoneConnIds({
      start: 2 ** 32 - 2,
      permutation: () => {
        const identity: Permutation = (n) => n
        made.push(identity)
        return identity
      }
    })
    assert.strictEqual(ids.next("s", never), "client-s-fffffffe")
    assert.strictEqual(ids.next("s", never), "client-s-ffffffff")
    assert.strictEqual(made.length, 1)
    const live = new Set(["client-s-00000000", "client-s-00000001"])
    assert.strictEqual(ids.next("s", (connId) => live.has(connId)), "client-s-00000002")
    assert.strictEqual(made.length, 2)
  })
})
