/**
 * The envelope codec (SPEC §2) and the close-code table (SPEC §2.3, §5). Pure functions.
 */
import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { isWireCode, toWireCode } from "../../src/domain/CloseCodes.ts"
import { closeNotice, decode, envelopePrefix, wrap } from "../../src/domain/Envelope.ts"
import { isJson } from "../../src/domain/JsonBytes.ts"

/** What `decode` says of a message given as text, with the frame's bytes shown as text. */
type DecodedText =
  | { readonly _tag: "Deliver"; readonly connId: string; readonly frame: string | undefined; readonly closeCode: number }
  | { readonly _tag: "Wake"; readonly pushWake: string }
  | { readonly _tag: "Malformed" | "MissingConnId" | "MissingFrame" }
const decodeText = (text: string): DecodedText => {
  const decoded = decode(Buffer.from(text))
  return decoded._tag === "Deliver"
    ? { ...decoded, frame: decoded.frame?.toString() }
    : decoded._tag === "Wake"
    ? { _tag: "Wake", pushWake: decoded.pushWake.toString() }
    : decoded
}

describe("decode: validation order of SPEC §2.2", () => {
  const cases: ReadonlyArray<readonly [string, string, DecodedText]> = [
    // 1. malformed: not JSON, not an object, or a known field of the wrong type
    ["not JSON", "{\"conn_id\":", { _tag: "Malformed" }],
    ["empty", "", { _tag: "Malformed" }],
    ["an array", "[{\"conn_id\":\"c\",\"frame\":1}]", { _tag: "Malformed" }],
    ["a string", "\"c\"", { _tag: "Malformed" }],
    ["null", "null", { _tag: "Malformed" }],
    ["conn_id a number", "{\"conn_id\":5,\"frame\":1}", { _tag: "Malformed" }],
    ["conn_id an object", "{\"conn_id\":{},\"frame\":1}", { _tag: "Malformed" }],
    ["close_code a string", "{\"conn_id\":\"c\",\"frame\":1,\"close_code\":\"4000\"}", { _tag: "Malformed" }],
    ["close_code a fraction", "{\"conn_id\":\"c\",\"frame\":1,\"close_code\":1000.5}", { _tag: "Malformed" }],
    ["close_code negative", "{\"conn_id\":\"c\",\"frame\":1,\"close_code\":-1}", { _tag: "Malformed" }],
    ["close_code above 65535", "{\"conn_id\":\"c\",\"frame\":1,\"close_code\":65536}", { _tag: "Malformed" }],
    ["close_code a boolean", "{\"conn_id\":\"c\",\"frame\":1,\"close_code\":true}", { _tag: "Malformed" }],
    // SPEC §2.2: the JSON number's exact value must be a whole number, whatever a float parse rounds it to.
    ["close_code just above an integer", "{\"conn_id\":\"c\",\"close_code\":4000.0000000000000001}", { _tag: "Malformed" }],
    ["close_code a tiny fraction", "{\"conn_id\":\"c\",\"frame\":1,\"close_code\":1e-400}", { _tag: "Malformed" }],
    ["close_code just below an integer", "{\"conn_id\":\"c\",\"close_code\":3999.99999999999999999}", { _tag: "Malformed" }],
    ["close_code 65535 and a sliver", "{\"conn_id\":\"c\",\"close_code\":65535.000000000000001}", { _tag: "Malformed" }],
    ["close_code a huge exponent", "{\"conn_id\":\"c\",\"close_code\":1e99999999999999999999}", { _tag: "Malformed" }],
    ["close_code -1e-400", "{\"conn_id\":\"c\",\"frame\":1,\"close_code\":-1e-400}", { _tag: "Malformed" }],
    ["wrong type beats a wake request", "{\"conn_id\":7,\"push_wake\":{}}", { _tag: "Malformed" }],
    ["a bad close_code beats a wake request", "{\"push_wake\":{},\"close_code\":\"x\"}", { _tag: "Malformed" }],
    ["push_wake not an object", "{\"push_wake\":5}", { _tag: "Malformed" }],
    ["wrong type beats a missing frame", "{\"conn_id\":\"c\",\"close_code\":\"x\"}", { _tag: "Malformed" }],
    // 2. conn_id none: wake request, else missing conn_id
    // The wake carries the exact bytes of its push_wake object, for push admission to read.
    ["wake without conn_id", "{\"push_wake\":{\"platform\":\"fcm\",\"token\":\"t\"}}", {
      _tag: "Wake",
      pushWake: "{\"platform\":\"fcm\",\"token\":\"t\"}"
    }],
    ["wake with conn_id null", "{\"conn_id\":null,\"push_wake\":{ }}", { _tag: "Wake", pushWake: "{ }" }],
    ["wake with conn_id empty", "{\"conn_id\":\"\",\"push_wake\":{},\"frame\":1}", { _tag: "Wake", pushWake: "{}" }],
    ["the last push_wake wins", "{\"push_wake\":{\"a\":1},\"push_wake\":{\"b\":2}}", { _tag: "Wake", pushWake: "{\"b\":2}" }],
    ["push_wake null is no wake", "{\"push_wake\":null}", { _tag: "MissingConnId" }],
    ["empty object", "{}", { _tag: "MissingConnId" }],
    ["frame without conn_id", "{\"frame\":1}", { _tag: "MissingConnId" }],
    ["conn_id empty", "{\"conn_id\":\"\",\"frame\":1}", { _tag: "MissingConnId" }],
    ["conn_id null", "{\"conn_id\":null,\"frame\":1,\"close_code\":4000}", { _tag: "MissingConnId" }],
    // 3. conn_id present, no directive, no frame
    ["no frame", "{\"conn_id\":\"c\"}", { _tag: "MissingFrame" }],
    ["frame null", "{\"conn_id\":\"c\",\"frame\":null}", { _tag: "MissingFrame" }],
    ["close_code 0, no frame", "{\"conn_id\":\"c\",\"close_code\":0}", { _tag: "MissingFrame" }],
    ["close_code null, frame null", "{\"conn_id\":\"c\",\"close_code\":null,\"frame\":null}", { _tag: "MissingFrame" }],
    // 4. valid
    ["a frame", "{\"conn_id\":\"c\",\"frame\":{\"a\":1}}", { _tag: "Deliver", connId: "c", frame: "{\"a\":1}", closeCode: 0 }],
    ["a falsy frame", "{\"conn_id\":\"c\",\"frame\":false}", { _tag: "Deliver", connId: "c", frame: "false", closeCode: 0 }],
    ["frame 0", "{\"conn_id\":\"c\",\"frame\":0}", { _tag: "Deliver", connId: "c", frame: "0", closeCode: 0 }],
    ["frame empty string", "{\"conn_id\":\"c\",\"frame\":\"\"}", { _tag: "Deliver", connId: "c", frame: "\"\"", closeCode: 0 }],
    ["directive without frame", "{\"conn_id\":\"c\",\"close_code\":4000}", {
      _tag: "Deliver",
      connId: "c",
      frame: undefined,
      closeCode: 4000
    }],
    ["directive with frame null", "{\"conn_id\":\"c\",\"close_code\":4000,\"frame\":null}", {
      _tag: "Deliver",
      connId: "c",
      frame: undefined,
      closeCode: 4000
    }],
    ["directive with frame", "{\"conn_id\":\"c\",\"frame\":[1],\"close_code\":65535}", {
      _tag: "Deliver",
      connId: "c",
      frame: "[1]",
      closeCode: 65535
    }],
    ["a non-wire directive code is still decoded as given", "{\"conn_id\":\"c\",\"close_code\":1005}", {
      _tag: "Deliver",
      connId: "c",
      frame: undefined,
      closeCode: 1005
    }],
    ["close_code 4e3 is 4000", "{\"conn_id\":\"c\",\"close_code\":4e3}", { _tag: "Deliver", connId: "c", frame: undefined, closeCode: 4000 }],
    ["close_code 4000.0 is 4000", "{\"conn_id\":\"c\",\"close_code\":4000.0}", { _tag: "Deliver", connId: "c", frame: undefined, closeCode: 4000 }],
    ["close_code 40000e-1 is 4000", "{\"conn_id\":\"c\",\"close_code\":40000e-1}", { _tag: "Deliver", connId: "c", frame: undefined, closeCode: 4000 }],
    ["close_code 0.4E+4 is 4000", "{\"conn_id\":\"c\",\"close_code\":0.4E+4}", { _tag: "Deliver", connId: "c", frame: undefined, closeCode: 4000 }],
    ["close_code 6.5535e4 is 65535", "{\"conn_id\":\"c\",\"close_code\":6.5535e4}", { _tag: "Deliver", connId: "c", frame: undefined, closeCode: 65535 }],
    ["close_code 0e999999999999 is 0", "{\"conn_id\":\"c\",\"frame\":1,\"close_code\":0e999999999999}", { _tag: "Deliver", connId: "c", frame: "1", closeCode: 0 }],
    ["close_code -0.0 is 0", "{\"conn_id\":\"c\",\"frame\":1,\"close_code\":-0.0}", { _tag: "Deliver", connId: "c", frame: "1", closeCode: 0 }],
    ["close_code null means none", "{\"conn_id\":\"c\",\"frame\":1,\"close_code\":null}", {
      _tag: "Deliver",
      connId: "c",
      frame: "1",
      closeCode: 0
    }],
    ["push_wake next to conn_id is ignored", "{\"conn_id\":\"c\",\"frame\":1,\"push_wake\":{\"token\":\"t\"}}", {
      _tag: "Deliver",
      connId: "c",
      frame: "1",
      closeCode: 0
    }],
    ["unknown fields are ignored", "{\"x\":[{}],\"conn_id\":\"c\",\"token\":\"t\",\"frame\":2}", {
      _tag: "Deliver",
      connId: "c",
      frame: "2",
      closeCode: 0
    }]
  ]
  for (const [name, text, expected] of cases) {
    it(name, () => assert.deepStrictEqual(decodeText(text), expected))
  }
})

describe("raw frame extraction", () => {
  const frameOf = (text: string) => {
    const decoded = decodeText(text)
    assert.strictEqual(decoded._tag, "Deliver")
    return decoded._tag === "Deliver" ? decoded.frame : undefined
  }

  const keptVerbatim: ReadonlyArray<readonly [string, string]> = [
    ["nested objects and arrays", "{\"a\":[1,{\"b\":[[],{}]}],\"c\":{\"d\":{\"e\":null}}}"],
    ["brackets inside strings", "{\"s\":\"}]{[\",\"t\":[\"]\",\"}\"]}"],
    ["escaped quotes", "\"say \\\"hi\\\"\""],
    ["a string ending in a backslash", "\"C:\\\\\""],
    ["escaped backslash before a quote inside an object", "{\"p\":\"a\\\\\",\"q\":\"\\\\\\\"\"}"],
    ["unicode escapes and raw unicode", "\"\\u00e9 é 🎉 \\ud83c\\udf89\""],
    ["a decimal with a trailing zero", "1.50"],
    ["an out-of-range number", "1e400"],
    ["negative zero and exponents", "[-0,1E+2,2e-7,-1.0]"],
    ["whitespace inside the value", "[ 1 ,\n\t{ \"a\" : 2 } ]"],
    ["a string that looks like a member", "\"\\\"frame\\\":9\""],
    ["an object holding a frame key", "{\"frame\":1}"]
  ]
  for (const [name, raw] of keptVerbatim) {
    it(`keeps ${name} verbatim`, () => {
      assert.strictEqual(frameOf(`{"conn_id":"c","frame":${raw}}`), raw)
      assert.strictEqual(frameOf(`{"frame":${raw},"conn_id":"c"}`), raw)
      assert.strictEqual(frameOf(` \n{ "conn_id" : "c" , "frame" :\t${raw} \n}\r\n`), raw)
    })
  }

  it("the last of duplicate frame keys wins, as with JSON.parse", () => {
    assert.strictEqual(frameOf("{\"conn_id\":\"c\",\"frame\":1,\"frame\":{\"x\":2}}"), "{\"x\":2}")
    assert.strictEqual(frameOf("{\"frame\":[1],\"conn_id\":\"c\",\"frame\":\"two\"}"), "\"two\"")
    assert.strictEqual(decodeText("{\"conn_id\":\"c\",\"frame\":1,\"frame\":null}")._tag, "MissingFrame")
  })

  it("an escaped key naming frame is the frame", () => {
    assert.strictEqual(frameOf("{\"conn_id\":\"c\",\"fr\\u0061me\":[3]}"), "[3]")
    assert.strictEqual(frameOf("{\"conn_id\":\"c\",\"frame\":1,\"fr\\u0061me\":2}"), "2")
  })

  it("a frame key inside another member or string is not the frame", () => {
    assert.strictEqual(frameOf("{\"x\":{\"frame\":1},\"conn_id\":\"c\",\"frame\":2}"), "2")
    assert.strictEqual(frameOf("{\"conn_id\":\"\\\"frame\\\":9\",\"frame\":3}"), "3")
    assert.strictEqual(frameOf("{\"y\":\"\\\\\",\"frame\":4,\"conn_id\":\"c\"}"), "4")
  })

  it("any JSON value comes back exactly as it was written", () => {
    fc.assert(
      fc.property(fc.json(), fc.constantFrom("", " ", "\n\t "), (raw, ws) => {
        const text = `{"conn_id":"c",${ws}"frame":${ws}${raw}${ws},"after":[${raw}]}`
        const decoded = decodeText(text)
        if (JSON.parse(raw) === null) return decoded._tag === "MissingFrame"
        return decoded._tag === "Deliver" && decoded.frame === raw
      }),
      { numRuns: 500 }
    )
  })
})

describe("wrap and prefixes", () => {
  it("envelopePrefix escapes a server-id containing quote and backslash", () => {
    const connId = "client-a\"b\\c-0000abcd"
    const prefix = envelopePrefix(connId)
    assert.strictEqual(prefix.toString(), "{\"conn_id\":\"client-a\\\"b\\\\c-0000abcd\",\"frame\":")
    const envelope = Buffer.concat(wrap(prefix, Buffer.from("{\"k\":1}"))).toString()
    assert.deepStrictEqual(JSON.parse(envelope), { conn_id: connId, frame: { k: 1 } })
    assert.deepStrictEqual(decodeText(envelope), { _tag: "Deliver", connId, frame: "{\"k\":1}", closeCode: 0 })
  })

  it("envelopePrefix escapes control characters and keeps exactly two keys in order", () => {
    const connId = "client-\n\u0000</script>-00000001"
    const envelope = Buffer.concat(wrap(envelopePrefix(connId), Buffer.from("1"))).toString()
    const parsed = JSON.parse(envelope) as Record<string, unknown>
    assert.deepStrictEqual(Object.keys(parsed), ["conn_id", "frame"])
    assert.strictEqual(parsed.conn_id, connId)
  })

  it("the close notice has exactly conn_id and close_code", () => {
    assert.strictEqual(closeNotice("client-s-0000abcd", 1001), "{\"conn_id\":\"client-s-0000abcd\",\"close_code\":1001}")
    assert.deepStrictEqual(JSON.parse(closeNotice("client-\"-00000000", 4000)), {
      conn_id: "client-\"-00000000",
      close_code: 4000
    })
  })

  it("isJson: any JSON value with surrounding whitespace; empty and blank are not JSON", () => {
    for (const text of ["1", "\"s\"", "null", "[]", "{}", " \n\t{\"a\":[1]}\r\n ", "1e400", "-0.0"]) {
      assert.isTrue(isJson(Buffer.from(text)), text)
    }
    for (const text of ["", " ", "\n", "{", "[1,]", "{'a':1}", "NaN", "undefined", "01", "\uFEFF1", "1 2", "\u00a01"]) {
      assert.isFalse(isJson(Buffer.from(text)), JSON.stringify(text))
    }
  })
})

describe("close codes on the wire", () => {
  const table: ReadonlyArray<readonly [number, boolean]> = [
    [0, false],
    [999, false],
    [1000, true],
    [1001, true],
    [1003, true],
    [1004, false],
    [1005, false],
    [1006, false],
    [1007, true],
    [1011, true],
    [1014, true],
    [1015, false],
    [2000, false],
    [2999, false],
    [3000, true],
    [4000, true],
    [4404, true],
    [4999, true],
    [5000, false],
    [65535, false]
  ]
  for (const [code, wire] of table) {
    it(`${code} ${wire ? "may" : "may not"} appear on the wire`, () => {
      assert.strictEqual(isWireCode(code), wire)
      assert.strictEqual(toWireCode(code), wire ? code : 1011)
    })
  }
})
