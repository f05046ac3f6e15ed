/**
 * The registry's table on its own (SPEC §3): each transition is one synchronous call that
 * changes the slots and says what must happen because of it — no Effect, no clock, no socket.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type { PhoneHandle } from "../../src/registry/Handles.ts"
import { SlotTable } from "../../src/registry/SlotTable.ts"
import { binaryHandle, phoneHandle } from "../support/Core.ts"
import { makeFakeConnection } from "../support/FakeConnection.ts"

const table = () => new SlotTable(2)

/** Registers a phone that must be accepted. */
const register = (t: SlotTable, serverId = "s") =>
  Effect.map(makeFakeConnection(), (conn): PhoneHandle => {
    const phone = t.register(serverId, phoneHandle(conn))
    if (typeof phone === "string") throw new Error(`not registered: ${phone}`)
    return phone
  })

describe("slot table", () => {
  it.effect("a reclaim cancels the grace and returns every phone, already removed from the table", () =>
    Effect.gen(function*() {
      const t = table()
      const first = binaryHandle("s", yield* makeFakeConnection())
      assert.strictEqual(t.claim(first)._tag, "Claimed")
      const p1 = yield* register(t)
      const p2 = yield* register(t)
      const token = t.release(first)!
      let cancelled = false
      token.cancel = () => void (cancelled = true)
      assert.deepStrictEqual([t.liveBinaries(), t.phones()], [0, 2])

      const second = binaryHandle("s", yield* makeFakeConnection())
      const claim = t.claim(second)
      assert.deepStrictEqual(claim, { _tag: "Reclaimed", phones: [p1, p2] })
      assert.isTrue(cancelled)
      assert.deepStrictEqual([t.liveBinaries(), t.phones()], [1, 0])
      assert.strictEqual(t.binaryFor("s"), second)
      assert.isUndefined(t.expire("s", token)) // the reclaimed grace's fire is stale
      assert.strictEqual(t.binaryFor("s"), second)
    }))

  it.effect("only the newest grace token expires the slot; the binary that released it is gone with it", () =>
    Effect.gen(function*() {
      const t = table()
      const binary = binaryHandle("s", yield* makeFakeConnection())
      t.claim(binary)
      const phone = yield* register(t)
      const older = t.release(binary)!
      const newer = t.release(binary)!
      assert.notStrictEqual(older, newer)
      assert.isUndefined(t.expire("s", older))
      assert.deepStrictEqual(t.expire("s", newer), { binary, phones: [phone] })
      assert.deepStrictEqual([t.liveBinaries(), t.phones()], [0, 0])
      assert.strictEqual(t.register("s", phoneHandle(yield* makeFakeConnection())), "NoServer")
    }))

  it.effect("a takeover needs the incumbent to still hold the slot and the newcomer to be open", () =>
    Effect.gen(function*() {
      const t = table()
      const incumbent = binaryHandle("s", yield* makeFakeConnection())
      t.claim(incumbent)
      const other = binaryHandle("s", yield* makeFakeConnection())
      assert.strictEqual(t.takeover(other, binaryHandle("s", yield* makeFakeConnection())), "Superseded")
      const gone = yield* makeFakeConnection()
      gone.peerClose(1006)
      assert.strictEqual(t.takeover(binaryHandle("s", gone), incumbent), "Gone")
      assert.strictEqual(t.binaryFor("s"), incumbent)
      assert.deepStrictEqual(t.takeover(other, incumbent), { _tag: "TookOver", phones: [] })
      assert.strictEqual(t.binaryFor("s"), other)
      assert.isUndefined(t.release(incumbent)) // displaced: arms nothing
    }))

  it.effect("phones: NoServer before PhonesAtCap, unregister by identity only", () =>
    Effect.gen(function*() {
      const t = table()
      assert.strictEqual(t.register("s", phoneHandle(yield* makeFakeConnection())), "NoServer")
      t.claim(binaryHandle("s", yield* makeFakeConnection()))
      const p1 = yield* register(t)
      yield* register(t)
      assert.strictEqual(t.register("s", phoneHandle(yield* makeFakeConnection())), "PhonesAtCap")
      assert.isFalse(t.unregister({ ...p1 })) // same conn_id, not the same phone
      assert.isTrue(t.unregister(p1))
      assert.isFalse(t.unregister(p1))
      assert.isUndefined(t.phoneFor("s", p1.connId))
      assert.strictEqual(t.phones(), 1)
    }))
})
