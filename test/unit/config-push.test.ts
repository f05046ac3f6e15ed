import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { configOf, refusalOf } from "../support/ConfigRun.ts"
import { CLIENT_EMAIL, makeTestKey, serviceAccountJson } from "../support/PushKeys.ts"

describe("push settings (PUSH.md §1)", () => {
  const key = makeTestKey()
  const SECRET = "SECRETISH-c41d"
  const VARIABLE = "PYRYCODE_RELAY_FCM_CREDENTIALS"
  const dir = mkdtempSync(Path.join(tmpdir(), "push-config-"))
  const file = (name: string, content: string) => {
    const path = Path.join(dir, name)
    writeFileSync(path, content, { mode: 0o600 })
    return path
  }

  it.effect("push is off by default; the variable or the file turns it on", () =>
    Effect.gen(function*() {
      assert.isUndefined((yield* configOf([])).fcmCredentials)
      const fromEnv = yield* configOf([], { [VARIABLE]: serviceAccountJson(key) })
      assert.strictEqual(fromEnv.fcmCredentials?.clientEmail, CLIENT_EMAIL)
      const fromFile = yield* configOf(["--fcm-credentials-file", file("key.json", serviceAccountJson(key))])
      assert.strictEqual(fromFile.fcmCredentials?.clientEmail, CLIENT_EMAIL)
      const fromFileEnv = yield* configOf([], { PYRYCODE_RELAY_FCM_CREDENTIALS_FILE: file("key2.json", serviceAccountJson(key)) })
      assert.isDefined(fromFileEnv.fcmCredentials)
    }))

  it.effect("a bad key in the variable is always the same fixed refusal, even when empty, never echoing it", () =>
    Effect.gen(function*() {
      const values = [
        "",
        " ",
        `not json ${SECRET}`,
        JSON.stringify({ secret: SECRET }),
        serviceAccountJson(key, { type: `authorized_user_${SECRET}` }),
        serviceAccountJson(key, { client_email: undefined, private_key_id: SECRET }),
        serviceAccountJson(key, { private_key: `${SECRET}` }),
        serviceAccountJson(key, { token_uri: `http://${SECRET}.example/token` })
      ]
      for (const value of values) {
        const message = yield* refusalOf([], { [VARIABLE]: value })
        assert.strictEqual(message, `${VARIABLE}: not a service-account JSON key (value withheld)`, JSON.stringify(value).slice(0, 40))
      }
    }))

  it.effect("--fcm-credentials-file: bad content, unreadable, too large, both sources", () =>
    Effect.gen(function*() {
      const flag = "--fcm-credentials-file"
      assert.strictEqual(
        yield* refusalOf([flag, file("bad.json", `{"type":"service_account","private_key":"${SECRET}"}`)]),
        `${flag}: not a service-account JSON key (value withheld)`
      )
      assert.strictEqual(yield* refusalOf([flag, Path.join(dir, "missing.json")]), `${flag}: cannot be read (ENOENT)`)
      assert.strictEqual(yield* refusalOf([flag, dir]), `${flag}: cannot be read (EISDIR)`)
      assert.strictEqual(yield* refusalOf([flag, file("big.json", " ".repeat(65_537))]), `${flag}: cannot be read (too large)`)
      assert.strictEqual(yield* refusalOf([flag, ""]), `${flag}: must be a file path, not empty`)
      assert.strictEqual(
        yield* refusalOf([flag, file("k.json", serviceAccountJson(key))], { [VARIABLE]: serviceAccountJson(key) }),
        `${VARIABLE} and ${flag} are both set (give one)`
      )
    }))

  it.effect("endpoint, project id and limits", () =>
    Effect.gen(function*() {
      const c = yield* configOf(["--fcm-endpoint", "https://gateway.example/fcm/"])
      assert.strictEqual(c.fcmEndpoint, "https://gateway.example/fcm")
      const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
        [["--fcm-endpoint", "http://fcm.googleapis.com"], "--fcm-endpoint: \"http://fcm.googleapis.com\" must be https://"],
        [["--fcm-endpoint", "http://10.0.0.1:8080"], "--fcm-endpoint: \"http://10.0.0.1:8080\" must be https://"],
        [["--fcm-endpoint", "fcm.googleapis.com"], "--fcm-endpoint: \"fcm.googleapis.com\" is not a URL"],
        [["--fcm-endpoint", `https://u:${SECRET}@x.example`], "--fcm-endpoint: must not carry user info (value withheld)"],
        [["--fcm-project-id", "a/b"], "--fcm-project-id: \"a/b\" is not a project id"],
        [["--push-burst", "0"], "--push-burst: must be at least 1"],
        [["--push-refill", "0"], "--push-refill: must be longer than 0"],
        [["--push-max-in-flight", "0"], "--push-max-in-flight: must be at least 1"]
      ]
      for (const [argv, expected] of cases) {
        const message = yield* refusalOf(argv)
        assert.include(message, expected, argv.join(" "))
        assert.notInclude(message, SECRET)
      }
      assert.include(yield* refusalOf([], { PYRYCODE_RELAY_PUSH_BURST: "many" }), "PYRYCODE_RELAY_PUSH_BURST:")
    }))
})
