/**
 * The young-generation hint (src/node/GcHint.ts): one asynchronous minor collection per 8 MiB
 * read, across all connections; nothing at all when the process does not expose `gc`.
 */
import { assert, describe, it } from "@effect/vitest"
import { makeGcHint } from "../../src/node/GcHint.ts"

describe("gc hint", () => {
  it("asks for one minor, asynchronous collection each time another 8 MiB were read", () => {
    const calls: Array<unknown> = []
    const hint = makeGcHint((options) => calls.push(options))
    const MiB = 1024 * 1024
    for (let i = 0; i < 8 * 1024 - 1; i++) hint.read(1024) // 8 MiB - 1 KiB
    assert.strictEqual(calls.length, 0)
    hint.read(1024)
    assert.deepStrictEqual(calls, [{ type: "minor", execution: "async" }])
    hint.read(5 * MiB)
    hint.read(3 * MiB - 1)
    assert.strictEqual(calls.length, 1)
    hint.read(1)
    hint.read(20 * MiB) // one large read: one collection, the count starts again
    assert.strictEqual(calls.length, 3)
  })

  it("does nothing when gc is not exposed", () => {
    const hint = makeGcHint(undefined)
    for (let i = 0; i < 100; i++) hint.read(1024 * 1024)
  })
})
