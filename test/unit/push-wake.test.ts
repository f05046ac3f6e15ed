/**
 * The push wake service on `TestClock` (PUSH.md §2–§4) over a scripted in-memory `HttpClient`:
 * admission (bucket, in-flight cap), token caching and sharing, the 10 s call timeout, shutdown
 * interruption, and exactly one outcome line and count per admitted wake.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import * as Scope from "effect/Scope"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as HttpClientResponse from "effect/http/HttpClientResponse"
import { TestClock } from "effect/testing"
import { defaults } from "../../src/config/RelayConfig.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import { makeLogger } from "../../src/observability/RelayLogger.ts"
import { makeAdmission } from "../../src/push/Admission.ts"
import { makePushWake, type PushWakeOptions, type PushWakeShape } from "../../src/push/PushWake.ts"
import { parseServiceAccount } from "../../src/push/ServiceAccount.ts"
import { tokenFingerprint } from "../../src/push/WakeRequest.ts"
import { count, isolated, settle } from "../support/Core.ts"
import { makeTestKey, serviceAccountJson, verifyJwt } from "../support/PushKeys.ts"

const key = makeTestKey()
const credentials = parseServiceAccount(serviceAccountJson(key, { token_uri: "http://127.0.0.1:1/token" }))!
const TOKEN_URL = "http://127.0.0.1:1/token"
const SEND_URL = "http://127.0.0.1:2/v1/projects/pyrycode-mobile/messages:send"

interface Seen {
  readonly url: string
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

/** Answers one request: a web `Response`, or an effect that never ends, or a transport failure. */
type Answer = (seen: Seen, n: number) => Effect.Effect<Response, HttpClientError.HttpClientError>

const json = (status: number, body: unknown) => Effect.succeed(new Response(JSON.stringify(body), { status }))
const grant = (token: string, expiresIn = 3600) => json(200, { access_token: token, token_type: "Bearer", expires_in: expiresIn })

const bodyText = (request: HttpClientRequest.HttpClientRequest): string =>
  request.body._tag === "Uint8Array" ? Buffer.from(request.body.body).toString() : ""

interface Harness {
  readonly push: PushWakeShape
  readonly tokenRequests: Array<Seen>
  readonly sends: Array<Seen>
  readonly logs: Array<Record<string, unknown>>
  /** Asks for one wake from `serverId`; runs the refusal effect, if any. Returns the refusal's reason. */
  readonly wake: (serverId: string, deviceToken?: string) => Effect.Effect<string | undefined>
  /** The same with the `push_wake` object's text as given. */
  readonly wakeRaw: (serverId: string, pushWake: string) => Effect.Effect<string | undefined>
  readonly outcomes: Effect.Effect<Record<string, number>>
}

const harness = (
  answers: { readonly token: Answer; readonly send: Answer },
  options: Partial<PushWakeOptions> = {}
): Effect.Effect<Harness, never, Scope.Scope> =>
  Effect.gen(function*() {
    const tokenRequests: Array<Seen> = []
    const sends: Array<Seen> = []
    const logs: Array<Record<string, unknown>> = []
    const client = HttpClient.make((request, url) => {
      const seen: Seen = { url: url.href, headers: request.headers, body: bodyText(request) }
      const isToken = url.href === TOKEN_URL
      const list = isToken ? tokenRequests : sends
      list.push(seen)
      const answer = isToken ? answers.token : answers.send
      return Effect.map(answer(seen, list.length), (response) => HttpClientResponse.fromWeb(request, response))
    })
    const logger = makeLogger("json", (line) => logs.push(JSON.parse(line) as Record<string, unknown>))
    const push = yield* makePushWake({
      credentials,
      projectId: defaults.fcmProjectId,
      endpoint: "http://127.0.0.1:2",
      burst: defaults.pushBurst,
      refill: defaults.pushRefill,
      maxInFlight: defaults.pushMaxInFlight,
      ...options
    }).pipe(
      Effect.provideService(HttpClient.HttpClient, client),
      Effect.provideService(Logger.CurrentLoggers, new Set([logger]))
    )
    const wakeRaw = (serverId: string, pushWake: string) =>
      Effect.gen(function*() {
        const before = logs.length
        const refused = push.request({ serverId, connId: `server-${serverId}-00000001` }, Buffer.from(pushWake))
        if (refused === undefined) return undefined
        yield* refused.pipe(Effect.provideService(Logger.CurrentLoggers, new Set([logger])))
        const line = logs.slice(before).find((l) => l["event"] === "push wake dropped")
        return String(line?.["reason"])
      })
    const wake = (serverId: string, deviceToken = `device-${serverId}`) =>
      wakeRaw(serverId, JSON.stringify({ platform: "fcm", token: deviceToken }))
    const outcomes = Effect.gen(function*() {
      const result: Record<string, number> = {}
      for (const [outcome, counter] of Object.entries(Metrics.pushWakes)) result[outcome] = yield* count(counter)
      return result
    })
    return { push, tokenRequests, sends, logs, wake, wakeRaw, outcomes }
  })

const never: Answer = () => Effect.never
const ok: Answer = (_, n) => json(200, { name: `projects/pyrycode-mobile/messages/${n}` })
const outcomeLines = (logs: ReadonlyArray<Record<string, unknown>>) =>
  logs.filter((l) => l["event"] === "push wake sent" || l["event"] === "push wake failed")
const zero = { dropped: 0, sent: 0, unregistered: 0, token_fetch_failed: 0, send_failed: 0 }

describe("the send", () => {
  it.effect("fetches a token with a signed JWT, sends exactly the data-only body, logs one line with token_fp", () =>
    isolated(Effect.gen(function*() {
      const h = yield* harness({ token: () => grant("ya29.first"), send: ok })
      assert.isUndefined(yield* h.wake("s", "the-device-token"))
      yield* settle

      assert.strictEqual(h.tokenRequests.length, 1)
      const form = new URLSearchParams(h.tokenRequests[0]!.body)
      assert.strictEqual(form.get("grant_type"), "urn:ietf:params:oauth:grant-type:jwt-bearer")
      assert.strictEqual(h.tokenRequests[0]!.headers["content-type"], "application/x-www-form-urlencoded")
      assert.isDefined(verifyJwt(form.get("assertion")!, key.publicKey))

      assert.strictEqual(h.sends.length, 1)
      assert.strictEqual(h.sends[0]!.url, SEND_URL)
      assert.strictEqual(h.sends[0]!.headers["authorization"], "Bearer ya29.first")
      assert.strictEqual(h.sends[0]!.headers["content-type"], "application/json")
      assert.strictEqual(h.sends[0]!.body, `{"message":{"token":"the-device-token","android":{"priority":"HIGH"}}}`)
      // No trace headers go to Google.
      assert.deepStrictEqual(Object.keys(h.sends[0]!.headers).sort(), ["authorization", "content-length", "content-type"])

      const lines = outcomeLines(h.logs)
      assert.strictEqual(lines.length, 1)
      assert.deepInclude(lines[0], {
        level: "info",
        event: "push wake sent",
        server_id: "s",
        token_fp: tokenFingerprint("the-device-token"),
        fcm_message_id: "projects/pyrycode-mobile/messages/1"
      })
      assert.deepStrictEqual(yield* h.outcomes, { ...zero, sent: 1 })
    })))

  it.effect("404 UNREGISTERED is unregistered; 400 is send_failed; only status and codes in the error", () =>
    isolated(Effect.gen(function*() {
      const h = yield* harness({
        token: () => grant("ya29.t"),
        send: (seen) =>
          seen.body.includes("dead")
            ? json(404, {
              error: {
                code: 404,
                message: "Requested entity was not found. SECRET-FREE-TEXT",
                status: "NOT_FOUND",
                details: [{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", errorCode: "UNREGISTERED" }]
              }
            })
            : json(400, { error: { code: 400, message: "SECRET-FREE-TEXT", status: "INVALID_ARGUMENT" } })
      })
      yield* h.wake("a", "dead")
      yield* h.wake("b", "bad")
      yield* settle
      const lines = outcomeLines(h.logs)
      assert.sameDeepMembers(lines.map((l) => [l["event"], l["level"], l["reason"], l["error"]]), [
        ["push wake failed", "warn", "unregistered", "HTTP 404 status=NOT_FOUND errorCode=UNREGISTERED"],
        ["push wake failed", "warn", "send_failed", "HTTP 400 status=INVALID_ARGUMENT"]
      ])
      assert.notInclude(JSON.stringify(h.logs), "SECRET")
      assert.deepStrictEqual(yield* h.outcomes, { ...zero, unregistered: 1, send_failed: 1 })
    })))

  it.effect("a transport failure is send_failed, named by its error code only", () =>
    isolated(Effect.gen(function*() {
      const h = yield* harness({
        token: () => grant("ya29.t"),
        send: () =>
          Effect.fail(
            new HttpClientError.HttpClientError({
              reason: new HttpClientError.TransportError({
                request: undefined as never,
                cause: Object.assign(new Error("connect ECONNREFUSED 10.1.2.3:443 SECRET"), { code: "ECONNREFUSED" })
              })
            })
          )
      })
      yield* h.wake("s")
      yield* settle
      assert.strictEqual(outcomeLines(h.logs)[0]?.["error"], "transport error ECONNREFUSED")
      assert.deepStrictEqual(yield* h.outcomes, { ...zero, send_failed: 1 })
    })))

  it.effect("a call that never answers fails as timeout after 10 s, not before", () =>
    isolated(Effect.gen(function*() {
      const h = yield* harness({ token: () => grant("ya29.t"), send: never })
      yield* h.wake("s")
      yield* settle
      yield* TestClock.adjust(Duration.millis(9_999))
      yield* settle
      assert.strictEqual(outcomeLines(h.logs).length, 0)
      yield* TestClock.adjust(Duration.millis(1))
      yield* settle
      assert.deepInclude(outcomeLines(h.logs)[0], { reason: "send_failed", error: "timeout", duration: "10s" })
      assert.deepStrictEqual(yield* h.outcomes, { ...zero, send_failed: 1 })
    })))

  it.effect("a token endpoint that never answers: token_fetch_failed after 10 s", () =>
    isolated(Effect.gen(function*() {
      const h = yield* harness({ token: never, send: ok })
      yield* h.wake("s")
      yield* settle
      yield* TestClock.adjust(Duration.seconds(10))
      yield* settle
      assert.deepInclude(outcomeLines(h.logs)[0], { reason: "token_fetch_failed", error: "token endpoint timeout" })
      assert.strictEqual(h.sends.length, 0)
    })))
})

describe("access token", () => {
  it.effect("two concurrent sends share one token fetch", () =>
    isolated(Effect.gen(function*() {
      const h = yield* harness({ token: () => Effect.andThen(Effect.sleep("1 second"), grant("ya29.shared")), send: ok })
      yield* h.wake("a")
      yield* h.wake("b")
      yield* settle
      yield* TestClock.adjust(Duration.seconds(1))
      yield* settle
      assert.strictEqual(h.tokenRequests.length, 1)
      assert.deepStrictEqual(h.sends.map((s) => s.headers["authorization"]), ["Bearer ya29.shared", "Bearer ya29.shared"])
      assert.deepStrictEqual(yield* h.outcomes, { ...zero, sent: 2 })
    })))

  it.effect("is reused until 5 minutes before expires_in, then fetched anew", () =>
    isolated(Effect.gen(function*() {
      const h = yield* harness({ token: (_, n) => grant(`ya29.${n}`, 3600), send: ok })
      yield* h.wake("a")
      yield* settle
      yield* TestClock.adjust(Duration.millis(55 * 60_000 - 1))
      yield* h.wake("b")
      yield* settle
      assert.strictEqual(h.tokenRequests.length, 1)
      yield* TestClock.adjust(Duration.millis(1))
      yield* h.wake("c")
      yield* settle
      assert.strictEqual(h.tokenRequests.length, 2)
      assert.deepStrictEqual(h.sends.map((s) => s.headers["authorization"]), ["Bearer ya29.1", "Bearer ya29.1", "Bearer ya29.2"])
    })))

  it.effect("a 401 from FCM drops the cached token: the next send fetches a new one", () =>
    isolated(Effect.gen(function*() {
      const h = yield* harness({
        token: (_, n) => grant(`ya29.${n}`),
        send: (_, n) => n === 1 ? json(401, { error: { code: 401, status: "UNAUTHENTICATED" } }) : ok(_, n)
      })
      yield* h.wake("a")
      yield* settle
      yield* h.wake("b")
      yield* settle
      assert.strictEqual(h.tokenRequests.length, 2)
      assert.deepStrictEqual(h.sends.map((s) => s.headers["authorization"]), ["Bearer ya29.1", "Bearer ya29.2"])
      assert.deepInclude(outcomeLines(h.logs)[0], { reason: "send_failed", error: "HTTP 401 status=UNAUTHENTICATED" })
    })))

  it.effect("a failed fetch fails every send waiting on it as token_fetch_failed, and is not cached", () =>
    isolated(Effect.gen(function*() {
      const h = yield* harness({
        token: () => Effect.andThen(Effect.sleep("1 second"), json(500, { error: "backend SECRET" })),
        send: ok
      })
      yield* h.wake("a")
      yield* h.wake("b")
      yield* settle
      yield* TestClock.adjust(Duration.seconds(1))
      yield* settle
      assert.strictEqual(h.tokenRequests.length, 1)
      assert.deepStrictEqual(outcomeLines(h.logs).map((l) => l["error"]), ["token endpoint HTTP 500", "token endpoint HTTP 500"])
      yield* h.wake("c")
      yield* settle
      assert.strictEqual(h.tokenRequests.length, 2)
      assert.deepStrictEqual(yield* h.outcomes, { ...zero, token_fetch_failed: 2 })
      assert.strictEqual(h.sends.length, 0)
    })))
})

describe("admission", () => {
  it("defaults are PUSH.md's: burst 6, one per 10 s, 32 in flight", () => {
    assert.strictEqual(defaults.pushBurst, 6)
    assert.strictEqual(Duration.toMillis(defaults.pushRefill), 10_000)
    assert.strictEqual(defaults.pushMaxInFlight, 32)
  })

  it.effect("a server-id gets a burst of 6, then rate limited (counted dropped); one more after 10 s; others unaffected", () =>
    isolated(Effect.gen(function*() {
      const h = yield* harness({ token: () => grant("ya29.t"), send: ok })
      for (let i = 0; i < 6; i++) assert.isUndefined(yield* h.wake("s"))
      assert.strictEqual(yield* h.wake("s"), "rate limited")
      assert.isUndefined(yield* h.wake("other"))
      yield* settle
      yield* TestClock.adjust(Duration.millis(9_999))
      assert.strictEqual(yield* h.wake("s"), "rate limited")
      yield* TestClock.adjust(Duration.millis(1))
      assert.isUndefined(yield* h.wake("s"))
      assert.strictEqual(yield* h.wake("s"), "rate limited")
      yield* settle
      assert.deepStrictEqual(yield* h.outcomes, { ...zero, dropped: 3, sent: 8 })
      const dropLine = h.logs.find((l) => l["event"] === "push wake dropped")
      assert.deepStrictEqual(
        { level: dropLine?.["level"], server_id: dropLine?.["server_id"], binary_conn_id: dropLine?.["binary_conn_id"] },
        { level: "warn", server_id: "s", binary_conn_id: "server-s-00000001" }
      )
    })))

  it.effect("at 32 sends in flight the next wake is refused 'in-flight cap' (counted) and its server-id keeps its tokens", () =>
    isolated(Effect.gen(function*() {
      const h = yield* harness({ token: () => grant("ya29.t"), send: never })
      for (let i = 0; i < 32; i++) assert.isUndefined(yield* h.wake(`s${i % 6}`, `d${i}`))
      yield* settle
      for (let i = 0; i < 7; i++) assert.strictEqual(yield* h.wake("x"), "in-flight cap")
      assert.deepStrictEqual(yield* h.outcomes, { ...zero, dropped: 7 })
      // The hanging sends time out; "x" still has its whole burst.
      yield* TestClock.adjust(Duration.seconds(10))
      yield* settle
      assert.deepStrictEqual(yield* h.outcomes, { ...zero, dropped: 7, send_failed: 32 })
      for (let i = 0; i < 6; i++) assert.isUndefined(yield* h.wake("x"))
      assert.strictEqual(yield* h.wake("x"), "rate limited")
    })))

  it("idle buckets are forgotten a minute after their last use, once full again; the map stays bounded", () => {
    const admission = makeAdmission({ burst: 6, refillMillis: 10_000, maxInFlight: 100_000 })
    for (let i = 0; i < 10_000; i++) assert.isUndefined(admission.admit(`s${i}`, 0))
    for (let i = 0; i < 10_000; i++) admission.release()
    assert.strictEqual(admission.buckets(), 10_000)
    assert.isUndefined(admission.admit("late", 59_999))
    assert.strictEqual(admission.buckets(), 10_001)
    assert.isUndefined(admission.admit("later", 60_000))
    assert.strictEqual(admission.buckets(), 2)
  })

  it("a bucket not yet full again is kept (forgetting it would hand out a fresh burst)", () => {
    const admission = makeAdmission({ burst: 6, refillMillis: 20_000, maxInFlight: 100 })
    for (let i = 0; i < 6; i++) admission.admit("slow", 0)
    assert.strictEqual(admission.admit("slow", 0), "rate limited")
    admission.admit("other", 60_000)
    assert.strictEqual(admission.buckets(), 2)
    // 3 tokens came back in 60 s, not 6.
    let allowed = 0
    for (let i = 0; i < 6; i++) if (admission.admit("slow", 60_000) === undefined) allowed++
    assert.strictEqual(allowed, 3)
  })

  it.effect("bad wakes are refused with their reason and not counted", () =>
    isolated(Effect.gen(function*() {
      const h = yield* harness({ token: () => grant("ya29.t"), send: ok })
      const cases: ReadonlyArray<readonly [string, string]> = [
        [`{"platform":"fcm"}`, "malformed"],
        [`{"platform":"apns","token":"t"}`, "unsupported platform"],
        [`{"platform":"fcm","token":""}`, "empty token"],
        [`{"platform":"fcm","token":"${"t".repeat(4097)}"}`, "token too long"]
      ]
      for (const [pushWake, reason] of cases) assert.strictEqual(yield* h.wakeRaw("s", pushWake), reason)
      yield* settle
      assert.deepStrictEqual(yield* h.outcomes, zero)
      assert.strictEqual(h.tokenRequests.length + h.sends.length, 0)
    })))
})

describe("shutdown", () => {
  it.effect("closing the service's scope interrupts every send in flight: each send_failed, logged", () =>
    isolated(Effect.gen(function*() {
      const scope = yield* Scope.make()
      const h = yield* harness({ token: () => grant("ya29.t"), send: never }).pipe(Scope.provide(scope))
      yield* h.wake("a")
      yield* h.wake("b")
      yield* h.wake("c")
      yield* settle
      assert.strictEqual(h.sends.length, 3)
      yield* Scope.close(scope, Exit.void)
      const lines = outcomeLines(h.logs)
      assert.deepStrictEqual(lines.map((l) => [l["event"], l["reason"], l["error"]]), [
        ["push wake failed", "send_failed", "interrupted"],
        ["push wake failed", "send_failed", "interrupted"],
        ["push wake failed", "send_failed", "interrupted"]
      ])
      assert.deepStrictEqual(yield* h.outcomes, { ...zero, send_failed: 3 })
      // A wake admitted after that is reported at once, never lost.
      yield* h.wake("d")
      assert.deepStrictEqual(yield* h.outcomes, { ...zero, send_failed: 4 })
    })))

  it.effect("a send waiting on the shared token fetch is interrupted too", () =>
    isolated(Effect.gen(function*() {
      const scope = yield* Scope.make()
      const h = yield* harness({ token: never, send: ok }).pipe(Scope.provide(scope))
      yield* h.wake("a")
      yield* h.wake("b")
      yield* settle
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(outcomeLines(h.logs).map((l) => l["error"]), ["interrupted", "interrupted"])
      assert.deepStrictEqual(yield* h.outcomes, { ...zero, send_failed: 2 })
    })))
})
