/**
 * The cross-node wire (`src/cluster/Wire.ts`): records round-trip byte-exactly in batches, any
 * UTF-8 server-id survives, a batch cut short yields the records before the cut and says so, and
 * a record type this version does not know is skipped, not misread.
 */
import { assert, describe, it } from "@effect/vitest"
import { decode, encode, type Message } from "../../src/cluster/Wire.ts"

const samples: ReadonlyArray<Message> = [
  { _tag: "Probe", id: 0, serverId: "s", epoch: "1796622084758102", replyTo: "node-a" },
  { _tag: "Probe", id: 0xffffffff, serverId: "é}{ \u0000 ✓".repeat(50), epoch: "1", replyTo: "b" },
  { _tag: "ProbeAnswer", id: 7, alive: true },
  { _tag: "ProbeAnswer", id: 8, alive: false },
  { _tag: "ClaimLost", serverId: "", epoch: "2" }
]

describe("cluster wire", () => {
  it("a batch of records decodes to the same messages, in order", () => {
    const batch = Buffer.concat(samples.map(encode))
    assert.deepStrictEqual(decode(batch), { messages: [...samples], dropped: 0, unknown: 0 })
    // Each record is its own length prefix + type + fields: no JSON anywhere.
    const one = encode(samples[2]!)
    assert.strictEqual(one.readUInt32BE(0), one.length - 4)
  })

  it("a batch cut anywhere yields the whole records before the cut and reports the drop", () => {
    const records = samples.map(encode)
    const batch = Buffer.concat(records)
    for (let cut = 0; cut < batch.length; cut++) {
      const { messages, dropped } = decode(batch.subarray(0, cut))
      let whole = 0
      let at = 0
      while (whole < records.length && at + records[whole]!.length <= cut) at += records[whole++]!.length
      assert.deepStrictEqual(messages, samples.slice(0, whole), `cut at ${cut}`)
      assert.strictEqual(dropped, at === cut ? 0 : 1, `cut at ${cut}`)
    }
  })

  it("skips a record of a type it does not know, and reads on", () => {
    const foreign = Buffer.from([0, 0, 0, 3, 99, 1, 2])
    const batch = Buffer.concat([encode(samples[3]!), foreign, encode(samples[4]!)])
    assert.deepStrictEqual(decode(batch), { messages: [samples[3]!, samples[4]!], dropped: 0, unknown: 1 })
  })

  it("a record whose fields overrun its own length is dropped, not read into the next", () => {
    const good = encode(samples[2]!)
    const bad = Buffer.from(good)
    bad.writeUInt32BE(2, 0) // claims 2 bytes: type + half an id
    const batch = Buffer.concat([bad.subarray(0, 6), good])
    assert.strictEqual(decode(batch).dropped, 1)
    assert.deepStrictEqual(decode(batch).messages, [])
  })
})
