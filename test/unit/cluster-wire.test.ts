/**
 * The cross-node wire (`src/cluster/Wire.ts`): records round-trip byte-exactly in batches, any
 * UTF-8 server-id survives, a batch cut short yields the records before the cut and says so, and
 * a record type this version does not know is skipped, not misread.
 */
import { assert, describe, it } from "@effect/vitest"
import type { Message } from "../../src/cluster/Wire.ts"
import { decode } from "../../src/cluster/WireReader.ts"
import { BatchWriter, encode, recordSize } from "../../src/cluster/WireWriter.ts"

const samples: ReadonlyArray<Message> = [
  { _tag: "Probe", id: 0, serverId: "s", epoch: "1796622084758102", replyTo: "node-a" },
  { _tag: "Probe", id: 0xffffffff, serverId: "é}{ \u0000 ✓".repeat(50), epoch: "1", replyTo: "b" },
  { _tag: "ProbeAnswer", id: 7, alive: true },
  { _tag: "ProbeAnswer", id: 8, alive: false },
  { _tag: "ClaimLost", serverId: "", epoch: "2" },
  { _tag: "PhoneJoined", serverId: "s", epoch: "17", connId: "client-s-0123abcd", node: "node-a" },
  { _tag: "PhoneLeft", serverId: "s", epoch: "17", connId: "client-s-0123abcd", notice: 4001 },
  { _tag: "PhoneLeft", serverId: "s", epoch: "17", connId: "client-s-0123abcd", notice: 0 },
  {
    _tag: "ToBinary",
    serverId: "s",
    epoch: "17",
    connId: "client-s-0123abcd",
    node: "node-a",
    // Envelopes cross as bytes, untouched: escapes, number spellings, bytes that are not UTF-8.
    envelopes: [Buffer.from(`{"conn_id":"client-s-0123abcd","frame":{"n":1.50e+2,"s":"\\u00e9"}}`), Buffer.from([0xff, 0x00, 0x7b]), Buffer.alloc(0)]
  },
  { _tag: "ToBinary", serverId: "s", epoch: "17", connId: "c", node: "n", envelopes: [] },
  { _tag: "ToPhone", serverId: "s", epoch: "17", connId: "c", frame: Buffer.from(`[1,  2e3]`), closeCode: 0 },
  { _tag: "ToPhone", serverId: "s", epoch: "17", connId: "c", frame: undefined, closeCode: 4000 },
  { _tag: "ToPhone", serverId: "s", epoch: "17", connId: "c", frame: Buffer.alloc(70_000, 0x61), closeCode: 65535 },
  { _tag: "PhoneRefused", serverId: "s", epoch: "17", connId: "c", why: "backlog_full" },
  { _tag: "PhoneRefused", serverId: "s", epoch: "17", connId: "c", why: "no_binary" },
  { _tag: "PhoneRefused", serverId: "s", epoch: "17", connId: "c", why: "phone_backlog" },
  { _tag: "SlotGrace", serverId: "s", epoch: "17" },
  { _tag: "SlotEnded", serverId: "s", epoch: "17", how: "reclaimed" },
  { _tag: "SlotEnded", serverId: "s", epoch: "17", how: "expired" }
]

describe("cluster wire", () => {
  it("frames are carried as views into the batch, byte for byte", () => {
    const toPhone = samples.find((m) => m._tag === "ToPhone" && m.frame !== undefined && m.frame.length > 1000)!
    const [decoded] = decode(encode(toPhone)).messages
    assert.strictEqual(decoded?._tag, "ToPhone")
    if (decoded?._tag !== "ToPhone" || toPhone._tag !== "ToPhone") return
    assert.isTrue(decoded.frame!.equals(toPhone.frame!))
  })

  it("a data-plane record naming an outcome this version does not have is malformed, not misread", () => {
    const record = encode({ _tag: "SlotEnded", serverId: "s", epoch: "1", how: "expired" })
    const bad = Buffer.from(record)
    bad[bad.length - 1] = 9
    assert.deepStrictEqual(decode(Buffer.concat([bad, encode(samples[2]!)])), { messages: [], dropped: 1, unknown: 0 })
  })

  it("a batch of records decodes to the same messages, in order", () => {
    const batch = Buffer.concat(samples.map(encode))
    assert.deepStrictEqual(decode(batch), { messages: [...samples], dropped: 0, unknown: 0 })
    // Each record is its own length prefix + type + fields: no JSON anywhere.
    const one = encode(samples[2]!)
    assert.strictEqual(one.readUInt32BE(0), one.length - 4)
  })

  it("a batch cut anywhere yields the whole records before the cut and reports the drop", () => {
    // The 70 kB frame is left out: cutting at every byte of it adds nothing but time.
    const small = samples.filter((m) => m._tag !== "ToPhone" || m.frame === undefined || m.frame.length < 1000)
    const records = small.map(encode)
    const batch = Buffer.concat(records)
    for (let cut = 0; cut < batch.length; cut++) {
      const { messages, dropped } = decode(batch.subarray(0, cut))
      let whole = 0
      let at = 0
      while (whole < records.length && at + records[whole]!.length <= cut) at += records[whole++]!.length
      assert.deepStrictEqual(messages, small.slice(0, whole), `cut at ${cut}`)
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

  it("a batch written record by record, growing from a few bytes, is the records one after another", () => {
    const writer = new BatchWriter(8)
    for (const message of samples) assert.strictEqual(writer.write(message), recordSize(message))
    assert.strictEqual(writer.records, samples.length)
    assert.isTrue(writer.bytes().equals(Buffer.concat(samples.map(encode))))
    assert.deepStrictEqual(decode(writer.bytes()).messages, [...samples])
  })

  it("envelopes handed in parts or as strings cross as the same bytes as one buffer", () => {
    const whole = Buffer.from(`{"conn_id":"c","frame":{"é":"✓"}}`)
    const parts = [whole.subarray(0, 5), whole.subarray(5, 5), whole.subarray(5)]
    const base = { _tag: "ToBinary", serverId: "s", epoch: "1", connId: "c", node: "n" } as const
    const asParts = encode({ ...base, envelopes: [parts, whole.toString("utf8"), whole] })
    assert.isTrue(asParts.equals(encode({ ...base, envelopes: [whole, whole, whole] })))
    const [decoded] = decode(asParts).messages
    assert.deepStrictEqual(decoded, { ...base, envelopes: [whole, whole, whole] })
  })

  it("ids of equal length that differ are read as themselves (a batch's repeated ids are remembered)", () => {
    const ids = Array.from({ length: 20 }, (_, i) => `client-s-${(i * 7919).toString(16).padStart(8, "0")}`)
    const messages: Array<Message> = ids.flatMap((connId, i) => [
      { _tag: "ToPhone", serverId: `s${i % 3}`, epoch: `${10 + (i % 2)}`, connId, frame: Buffer.from(`${i}`), closeCode: 0 } as const,
      { _tag: "PhoneLeft", serverId: `s${i % 3}`, epoch: `${10 + (i % 2)}`, connId: ids[(i * 3) % ids.length]!, notice: 0 } as const
    ])
    assert.deepStrictEqual(decode(Buffer.concat(messages.map(encode))).messages, messages)
  })

  it("more distinct strings than the encoder keeps are still written right", () => {
    const messages: Array<Message> = Array.from({ length: 10_000 }, (_, i) => ({ _tag: "SlotGrace", serverId: `server-${i}`, epoch: `${i}` }))
    const writer = new BatchWriter()
    for (const message of messages) writer.write(message)
    for (const message of messages.slice(0, 100)) writer.write(message)
    assert.deepStrictEqual(decode(writer.bytes()).messages, [...messages, ...messages.slice(0, 100)])
  })
})
