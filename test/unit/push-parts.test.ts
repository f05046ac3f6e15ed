/**
 * The pure parts of push wake (PUSH.md): the service-account key and URLs checked at boot, the
 * `push_wake` object, the JWT, reply classification and the 4 KiB read.
 */
import { generateKeyPairSync } from "node:crypto"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import { messageBody, readAtMost } from "../../src/push/FcmClient.ts"
import { FCM_SCOPE, signAssertion } from "../../src/push/Jwt.ts"
import { classifyFcmReply, readTokenReply } from "../../src/push/Outcome.ts"
import {
  DEFAULT_TOKEN_URI,
  parseFcmEndpoint,
  parseProjectId,
  parseServiceAccount
} from "../../src/push/ServiceAccount.ts"
import { readWakeRequest, tokenFingerprint } from "../../src/push/WakeRequest.ts"
import { CLIENT_EMAIL, makeTestKey, PRIVATE_KEY_ID, serviceAccountJson, verifyJwt } from "../support/PushKeys.ts"

const key = makeTestKey()
const bytes = (text: string) => Buffer.from(text)

describe("service-account key", () => {
  it("accepts Google's shape with a PKCS#8 or a PKCS#1 RSA key", () => {
    const pkcs8 = parseServiceAccount(serviceAccountJson(key))
    assert.isDefined(pkcs8)
    assert.strictEqual(pkcs8!.clientEmail, CLIENT_EMAIL)
    assert.strictEqual(pkcs8!.privateKeyId, PRIVATE_KEY_ID)
    assert.strictEqual(pkcs8!.tokenUri, "https://oauth2.googleapis.com/token")
    assert.isDefined(parseServiceAccount(serviceAccountJson(key, { private_key: key.pkcs1 })))
  })

  it("defaults token_uri and treats a missing private_key_id as no kid", () => {
    const c = parseServiceAccount(serviceAccountJson(key, { token_uri: undefined, private_key_id: undefined }))
    assert.strictEqual(c?.tokenUri, DEFAULT_TOKEN_URI)
    assert.isUndefined(c?.privateKeyId)
  })

  it("accepts an http:// token_uri only on loopback", () => {
    assert.isDefined(parseServiceAccount(serviceAccountJson(key, { token_uri: "http://127.0.0.1:9/token" })))
    assert.isDefined(parseServiceAccount(serviceAccountJson(key, { token_uri: "http://[::1]:9/token" })))
    assert.isDefined(parseServiceAccount(serviceAccountJson(key, { token_uri: "http://localhost:9/token" })))
    assert.isUndefined(parseServiceAccount(serviceAccountJson(key, { token_uri: "http://10.0.0.1/token" })))
    assert.isUndefined(parseServiceAccount(serviceAccountJson(key, { token_uri: "ftp://127.0.0.1/token" })))
  })

  it("refuses anything else", () => {
    const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" })
    const pss = generateKeyPairSync("rsa-pss", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" })
    const der = key.privateKey.export({ type: "pkcs8", format: "der" }).toString("base64")
    const encrypted = key.privateKey.export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "x" })
    const bad: ReadonlyArray<readonly [string, string]> = [
      ["empty", ""],
      ["not JSON", "service_account"],
      ["an array", "[]"],
      ["JSON null", "null"],
      ["another type", serviceAccountJson(key, { type: "authorized_user" })],
      ["no type", serviceAccountJson(key, { type: undefined })],
      ["no client_email", serviceAccountJson(key, { client_email: undefined })],
      ["empty client_email", serviceAccountJson(key, { client_email: "" })],
      ["no private_key", serviceAccountJson(key, { private_key: undefined })],
      ["private_key not PEM", serviceAccountJson(key, { private_key: der })],
      ["private_key garbage PEM", serviceAccountJson(key, { private_key: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" })],
      ["an EC key", serviceAccountJson(key, { private_key: ec.toString() })],
      ["an RSA-PSS key", serviceAccountJson(key, { private_key: pss.toString() })],
      ["an encrypted key", serviceAccountJson(key, { private_key: encrypted.toString() })],
      ["private_key_id a number", serviceAccountJson(key, { private_key_id: 5 })],
      ["token_uri not a URL", serviceAccountJson(key, { token_uri: "oauth2" })],
      ["token_uri with user info", serviceAccountJson(key, { token_uri: "https://u:p@oauth2.googleapis.com/token" })]
    ]
    for (const [name, text] of bad) assert.isUndefined(parseServiceAccount(text), name)
  })
})

describe("FCM endpoint and project id", () => {
  const ok = (raw: string) => {
    const r = parseFcmEndpoint(raw)
    if (Result.isFailure(r)) throw new Error(`${raw}: ${r.failure}`)
    return r.success
  }
  it("https anywhere, http only on loopback; no trailing slash", () => {
    assert.strictEqual(ok("https://fcm.googleapis.com"), "https://fcm.googleapis.com")
    assert.strictEqual(ok("https://gateway.example/fcm/"), "https://gateway.example/fcm")
    assert.strictEqual(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080")
    assert.strictEqual(ok("http://127.9.9.9:8080/"), "http://127.9.9.9:8080")
    assert.strictEqual(ok("http://[::1]:8080"), "http://[::1]:8080")
    assert.strictEqual(ok("http://localhost:8080"), "http://localhost:8080")
    for (const raw of ["http://10.0.0.1", "http://fcm.googleapis.com", "http://127.0.0.1.nip.io", "ws://127.0.0.1", "fcm.googleapis.com", ""]) {
      assert.isTrue(Result.isFailure(parseFcmEndpoint(raw)), raw)
    }
  })
  it("refuses user info without quoting it, and queries and fragments", () => {
    const r = parseFcmEndpoint("https://user:SECRET@fcm.googleapis.com")
    assert.isTrue(Result.isFailure(r))
    if (Result.isFailure(r)) assert.notInclude(r.failure, "SECRET")
    assert.isTrue(Result.isFailure(parseFcmEndpoint("https://fcm.googleapis.com/?x=1")))
    assert.isTrue(Result.isFailure(parseFcmEndpoint("https://fcm.googleapis.com/#x")))
  })
  it("project ids", () => {
    assert.isTrue(Result.isSuccess(parseProjectId("pyrycode-mobile")))
    assert.isTrue(Result.isSuccess(parseProjectId("google.com:legacy-project")))
    for (const raw of ["", "a/b", "../x", "a b", "-x"]) assert.isTrue(Result.isFailure(parseProjectId(raw)), raw)
  })
})

describe("push_wake object (PUSH.md §2 step 2)", () => {
  const reason = (text: string) => {
    const r = readWakeRequest(bytes(text))
    return r._tag === "Refused" ? r.reason : `valid:${r.token}`
  }
  it("needs string platform and token, platform fcm, a token of 1..4096 bytes", () => {
    assert.strictEqual(reason(`{"platform":"fcm","token":"abc"}`), "valid:abc")
    assert.strictEqual(reason(`{"token":"abc","platform":"fcm","extra":[1]}`), "valid:abc")
    assert.strictEqual(reason(`{}`), "malformed")
    assert.strictEqual(reason(`{"platform":"fcm"}`), "malformed")
    assert.strictEqual(reason(`{"platform":"fcm","token":5}`), "malformed")
    assert.strictEqual(reason(`{"platform":null,"token":"abc"}`), "malformed")
    assert.strictEqual(reason(`{"platform":"apns","token":"abc"}`), "unsupported platform")
    assert.strictEqual(reason(`{"platform":"FCM","token":"abc"}`), "unsupported platform")
    assert.strictEqual(reason(`{"platform":"fcm","token":""}`), "empty token")
    assert.strictEqual(reason(`{"platform":"fcm","token":"${"a".repeat(4096)}"}`), `valid:${"a".repeat(4096)}`)
    assert.strictEqual(reason(`{"platform":"fcm","token":"${"a".repeat(4097)}"}`), "token too long")
    // Bytes, not characters: 2049 two-byte characters are 4098 bytes.
    assert.strictEqual(reason(`{"platform":"fcm","token":"${"é".repeat(2049)}"}`), "token too long")
  })
  it("token_fp is the first 8 hex of SHA-256(token)", () => {
    // echo -n device-token | sha256sum
    assert.strictEqual(tokenFingerprint("device-token"), "73fff793")
    assert.match(tokenFingerprint("x"), /^[0-9a-f]{8}$/)
  })
})

describe("JWT assertion (PUSH.md §3.1)", () => {
  it("is RS256 over the claims, verifiable with the public half, kid from private_key_id", () => {
    const credentials = parseServiceAccount(serviceAccountJson(key, { token_uri: "http://127.0.0.1:1/token" }))!
    const jwt = signAssertion(credentials, 1_700_000_000)
    const verified = verifyJwt(jwt, key.publicKey)
    assert.isDefined(verified)
    assert.deepStrictEqual(verified!.header, { alg: "RS256", typ: "JWT", kid: PRIVATE_KEY_ID })
    assert.deepStrictEqual(verified!.claims, {
      iss: CLIENT_EMAIL,
      scope: FCM_SCOPE,
      aud: "http://127.0.0.1:1/token",
      iat: 1_700_000_000,
      exp: 1_700_003_600
    })
    // Another key does not verify it.
    assert.isUndefined(verifyJwt(jwt, makeTestKey().publicKey))
  })
  it("has no kid without private_key_id", () => {
    const credentials = parseServiceAccount(serviceAccountJson(key, { private_key_id: undefined }))!
    assert.deepStrictEqual(verifyJwt(signAssertion(credentials, 1), key.publicKey)!.header, { alg: "RS256", typ: "JWT" })
  })
})

describe("message body (PUSH.md §3.2)", () => {
  it("is exactly the data-only message", () => {
    assert.strictEqual(messageBody("tok\"en"), `{"message":{"token":"tok\\"en","android":{"priority":"HIGH"}}}`)
  })
})

describe("reply classification (PUSH.md §3.4)", () => {
  const fcmError = (status: string, errorCode: string, message = "free text SECRET-FREE-TEXT") =>
    bytes(JSON.stringify({
      error: {
        code: 400,
        message,
        status,
        details: [
          { "@type": "type.googleapis.com/google.rpc.BadRequest", errorCode: "OTHER_DETAIL" },
          { "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", errorCode }
        ]
      }
    }))

  it("2xx is sent; the name is kept only when it looks like a message id", () => {
    const id = "projects/p/messages/0:1700000000000000%31bd1c9631bd1c96"
    assert.deepStrictEqual(classifyFcmReply(200, bytes(JSON.stringify({ name: id }))), { outcome: "sent", messageId: id })
    assert.deepStrictEqual(classifyFcmReply(200, bytes(`{"name":"has space"}`)), { outcome: "sent", messageId: undefined })
    assert.deepStrictEqual(classifyFcmReply(200, bytes(`{"name":"${"a".repeat(257)}"}`)), { outcome: "sent", messageId: undefined })
    assert.deepStrictEqual(classifyFcmReply(204, bytes("")), { outcome: "sent", messageId: undefined })
    assert.deepStrictEqual(classifyFcmReply(200, bytes(`{"name":"proj`)), { outcome: "sent", messageId: undefined })
  })

  it("UNREGISTERED is unregistered; other errors send_failed; only status and enum-shaped codes in the text", () => {
    assert.deepStrictEqual(classifyFcmReply(404, fcmError("NOT_FOUND", "UNREGISTERED")), {
      outcome: "unregistered",
      error: "HTTP 404 status=NOT_FOUND errorCode=UNREGISTERED"
    })
    assert.deepStrictEqual(classifyFcmReply(400, fcmError("INVALID_ARGUMENT", "INVALID_ARGUMENT")), {
      outcome: "send_failed",
      error: "HTTP 400 status=INVALID_ARGUMENT errorCode=INVALID_ARGUMENT"
    })
    assert.deepStrictEqual(classifyFcmReply(500, bytes("<html>oops SECRET</html>")), { outcome: "send_failed", error: "HTTP 500" })
    assert.deepStrictEqual(classifyFcmReply(307, bytes("")), { outcome: "send_failed", error: "HTTP 307" })
    // Not enum-shaped: left out.
    assert.deepStrictEqual(classifyFcmReply(400, fcmError("bad status SECRET", "lower_case")), {
      outcome: "send_failed",
      error: "HTTP 400"
    })
    assert.deepStrictEqual(classifyFcmReply(400, fcmError("A".repeat(65), "UNREGISTERED")), {
      outcome: "unregistered",
      error: "HTTP 400 errorCode=UNREGISTERED"
    })
  })

  it("token replies: a grant, or the status only", () => {
    assert.deepStrictEqual(readTokenReply(200, bytes(`{"access_token":"ya29.x","token_type":"Bearer","expires_in":3600}`)), {
      accessToken: "ya29.x",
      expiresIn: 3600
    })
    assert.deepStrictEqual(readTokenReply(200, bytes(`{"access_token":"ya29.x"}`)), { accessToken: "ya29.x", expiresIn: 0 })
    assert.strictEqual(readTokenReply(400, bytes(`{"error":"invalid_grant","error_description":"SECRET"}`)), "token endpoint HTTP 400")
    assert.strictEqual(readTokenReply(200, bytes(`{"token":"x"}`)), "token endpoint HTTP 200, reply unreadable")
    assert.strictEqual(readTokenReply(200, bytes(`{"access_token":"a\\r\\nX-Injected: 1"}`)), "token endpoint HTTP 200, reply unreadable")
    assert.strictEqual(readTokenReply(200, bytes(`not json`)), "token endpoint HTTP 200, reply unreadable")
  })
})

describe("reading at most 4 KiB", () => {
  it.effect("stops pulling once it has the limit: a 1 MiB reply costs a few chunks", () =>
    Effect.gen(function*() {
      let pulled = 0
      const oneMiB = Stream.fromIterable(Array.from({ length: 1024 }, () => new Uint8Array(1024).fill(0x61))).pipe(
        Stream.tap(() => Effect.sync(() => pulled++))
      )
      const body = yield* readAtMost(oneMiB, 4096)
      assert.strictEqual(body.length, 4096)
      assert.isAtMost(pulled, 5)
    }))
  it.effect("a short body is read whole", () =>
    Effect.gen(function*() {
      const body = yield* readAtMost(Stream.make(bytes("ab"), bytes("c")), 4096)
      assert.strictEqual(Buffer.from(body).toString(), "abc")
    }))
})
