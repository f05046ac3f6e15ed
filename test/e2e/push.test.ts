/**
 * Push wake end to end (PUSH.md): the real relay process, a `ws` binary sending wake envelopes,
 * a fake OAuth server that verifies the JWT's RS256 signature against the public half of a key
 * made for this run, and a fake FCM server scripted for every outcome. Logs, `/metrics` and
 * `/healthz` are searched for every secret at the end.
 */
import { createHash, randomBytes } from "node:crypto"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { type FakeFcm, type FakeOAuth, REPLY_SECRET, startElsewhere, startFakeFcm, startFakeOAuth } from "../support/FakeGoogle.ts"
import { dialBinary, dialPhone, envelopes, eventually, type Peer, sleep } from "../support/Peers.ts"
import { makeTestKey, serviceAccountJson } from "../support/PushKeys.ts"
import { killTracked, type RelayProcess, startTrackedRelay } from "../support/RelayProcess.ts"

const OUTCOMES = ["dropped", "sent", "unregistered", "token_fetch_failed", "send_failed"] as const
type Outcome = (typeof OUTCOMES)[number]

const key = makeTestKey()
let oauth: FakeOAuth
let fcm: FakeFcm
let elsewhere: Awaited<ReturnType<typeof startElsewhere>>
let relay: RelayProcess
let credentials: string
/** Every device token any test used: none may ever show in a log, a metric or /healthz. */
const deviceTokens: Array<string> = []
let n = 0

/** A device token scripted as `kind` (see `startFakeFcm`), long and random like a real one. */
const deviceToken = (kind: string) => {
  const token = `${kind}-${randomBytes(40).toString("base64url")}`
  deviceTokens.push(token)
  return token
}
const fp = (token: string) => createHash("sha256").update(token).digest("hex").slice(0, 8)
const sid = () => `push-e2e-${process.pid}-${++n}`
const wake = (binary: Peer, token: string) => binary.send(JSON.stringify({ push_wake: { platform: "fcm", token } }))

const parsed = (r: RelayProcess) =>
  r.logs.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>]
    } catch {
      return []
    }
  })

/** The one `push wake sent` / `push wake failed` line of the wake for `token`, once it is there. */
const outcomeLine = async (r: RelayProcess, token: string, timeoutMs = 5000) => {
  const mine = () =>
    parsed(r).filter((l) => l["token_fp"] === fp(token) && (l["event"] === "push wake sent" || l["event"] === "push wake failed"))
  await eventually(() => mine().length > 0, timeoutMs)
  await sleep(50)
  expect(mine(), "exactly one outcome line per admitted wake").toHaveLength(1)
  return mine()[0]!
}

const counts = async (r: RelayProcess): Promise<Record<Outcome, number>> => {
  const text = await (await fetch(r.metricsUrl)).text()
  const result = {} as Record<Outcome, number>
  for (const outcome of OUTCOMES) {
    const match = new RegExp(`^pyrycode_relay_push_wakes_total\\{outcome="${outcome}"\\} (\\d+)$`, "m").exec(text)
    if (match === null) throw new Error(`no push_wakes_total series for ${outcome}`)
    result[outcome] = Number(match[1])
  }
  return result
}

const startPushRelay = (json: string, extra: ReadonlyArray<string> = []) =>
  startTrackedRelay(["--fcm-endpoint", fcm.url, "--fcm-project-id", "pyrycode-e2e", ...extra], {
    env: { PYRYCODE_RELAY_FCM_CREDENTIALS: json }
  })

beforeAll(async () => {
  oauth = await startFakeOAuth(key.publicKey)
  elsewhere = await startElsewhere()
  fcm = await startFakeFcm(elsewhere.url)
  credentials = serviceAccountJson(key, { token_uri: oauth.tokenUri })
  relay = await startPushRelay(credentials)
})

afterAll(async () => {
  killTracked()
  await Promise.all([oauth?.close(), fcm?.close(), elsewhere?.close()])
})

describe("push on: one relay, every outcome", () => {
  it("every outcome series exists at 0 from boot; no `push off` line", async () => {
    expect(await counts(relay)).toEqual({ dropped: 0, sent: 0, unregistered: 0, token_fetch_failed: 0, send_failed: 0 })
    expect(parsed(relay).some((l) => l["event"] === "push off")).toBe(false)
    expect(parsed(relay).find((l) => l["event"] === "relay started")?.["push"]).toBe("fcm")
  })

  it("sent: two wakes at once share one verified token fetch; FCM gets exactly the data-only body; nothing goes back", async () => {
    const binary = await dialBinary(relay.url, sid())
    const first = deviceToken("ok")
    const second = deviceToken("ok")
    wake(binary, first)
    wake(binary, second)
    const line = await outcomeLine(relay, first)
    await outcomeLine(relay, second)

    expect(oauth.requests).toHaveLength(1)
    expect(oauth.requests[0]!.verified).toBe(true)
    const sent = fcm.requests.filter((r) => r.deviceToken === first || r.deviceToken === second)
    expect(sent).toHaveLength(2)
    for (const request of sent) {
      expect(request.path).toBe("/v1/projects/pyrycode-e2e/messages:send")
      expect(request.authorization).toBe(`Bearer ${oauth.issued[0]}`)
      expect(request.contentType).toBe("application/json")
      expect(request.body).toBe(`{"message":{"token":"${request.deviceToken}","android":{"priority":"HIGH"}}}`)
    }
    expect(line).toMatchObject({
      level: "info",
      event: "push wake sent",
      fcm_message_id: "projects/pyrycode-e2e/messages/0:1700000000000000%31bd1c9631bd1c96"
    })
    expect(typeof line["duration"]).toBe("string")
    expect((await counts(relay)).sent).toBe(2)
    // Nothing about the outcome is sent back to the binary, and it stays connected.
    await sleep(100)
    expect(binary.messages).toEqual([])
    expect(binary.ws.readyState).toBe(binary.ws.OPEN)
    binary.ws.close()
  })

  it("each FCM reply maps to its outcome; a redirect is never followed; a 1 MiB reply is read to 4 KiB only", async () => {
    const before = await counts(relay)
    const binary = await dialBinary(relay.url, sid())
    const cases: ReadonlyArray<readonly [string, string, string]> = [
      ["unregistered", "unregistered", "HTTP 404 status=NOT_FOUND errorCode=UNREGISTERED"],
      ["invalid", "send_failed", "HTTP 400 status=INVALID_ARGUMENT errorCode=INVALID_ARGUMENT"],
      ["broken", "send_failed", "HTTP 500"],
      ["redirect", "send_failed", "HTTP 307"],
      // Its UNREGISTERED detail sits after 1 MiB of text: read whole, it would say `unregistered`.
      ["huge", "send_failed", "HTTP 404"]
    ]
    const tokens = cases.map(([kind]) => deviceToken(kind))
    for (const token of tokens) wake(binary, token)
    for (const [i, [kind, reason, error]] of cases.entries()) {
      const line = await outcomeLine(relay, tokens[i]!)
      expect(line, kind).toMatchObject({ level: "warn", event: "push wake failed", reason, error })
    }
    expect(elsewhere.contacts(), "the redirect target was contacted").toBe(0)
    const after = await counts(relay)
    expect(after.unregistered - before.unregistered).toBe(1)
    expect(after.send_failed - before.send_failed).toBe(4)
    expect(binary.messages).toEqual([])
    binary.ws.close()
  })

  it("a 401 from FCM drops the cached token: the next wake fetches a new one", async () => {
    const binary = await dialBinary(relay.url, sid())
    const refused = deviceToken("unauthorized")
    wake(binary, refused)
    expect(await outcomeLine(relay, refused)).toMatchObject({ reason: "send_failed", error: "HTTP 401 status=UNAUTHENTICATED" })
    const issued = oauth.issued.length
    const next = deviceToken("ok")
    wake(binary, next)
    expect(await outcomeLine(relay, next)).toMatchObject({ event: "push wake sent" })
    expect(oauth.issued).toHaveLength(issued + 1)
    expect(fcm.requests.find((r) => r.deviceToken === next)?.authorization).toBe(`Bearer ${oauth.issued.at(-1)}`)
    binary.ws.close()
  })

  it("a reply that never ends, or never starts, fails as send_failed timeout after 10 s", async () => {
    const binary = await dialBinary(relay.url, sid())
    const hang = deviceToken("hang")
    const trickle = deviceToken("trickle")
    const started = Date.now()
    wake(binary, hang)
    wake(binary, trickle)
    for (const token of [hang, trickle]) {
      expect(await outcomeLine(relay, token, 15_000)).toMatchObject({ reason: "send_failed", error: "timeout" })
    }
    expect(Date.now() - started).toBeGreaterThanOrEqual(9_900)
    binary.ws.close()
  }, 30_000)

  it("a wake requested just before its binary disconnects is still sent", async () => {
    const binary = await dialBinary(relay.url, sid())
    const token = deviceToken("slow")
    wake(binary, token)
    await eventually(() => fcm.requests.some((r) => r.deviceToken === token))
    binary.ws.terminate()
    await binary.closed
    expect(await outcomeLine(relay, token)).toMatchObject({ event: "push wake sent" })
  })

  it("the 7th wake of a burst is rate limited and counted; the binary stays connected and its phone still gets frames", async () => {
    const serverId = sid()
    const binary = await dialBinary(relay.url, serverId)
    const phone = await dialPhone(relay.url, serverId)
    phone.send(`"hello"`)
    await binary.waitFor(1)
    const connId = envelopes(binary)[0]!.conn_id as string
    const before = await counts(relay)
    const tokens = Array.from({ length: 7 }, () => deviceToken("ok"))
    for (const token of tokens) wake(binary, token)
    await eventually(async () => (await counts(relay)).dropped === before.dropped + 1)
    await eventually(() => parsed(relay).some((l) => l["event"] === "push wake dropped" && l["server_id"] === serverId))
    expect(parsed(relay).find((l) => l["event"] === "push wake dropped" && l["server_id"] === serverId)).toMatchObject({
      level: "warn",
      reason: "rate limited"
    })
    for (const token of tokens.slice(0, 6)) await outcomeLine(relay, token)
    expect((await counts(relay)).sent - before.sent).toBe(6)
    binary.send(JSON.stringify({ conn_id: connId, frame: "still here" }))
    expect(await phone.waitFor(1)).toEqual([`"still here"`])
    expect(binary.ws.readyState).toBe(binary.ws.OPEN)
    phone.ws.close()
    binary.ws.close()
  })

  it("a bad wake is dropped with its reason and not counted; a push_wake next to a conn_id is no wake", async () => {
    const serverId = sid()
    const binary = await dialBinary(relay.url, serverId)
    const before = await counts(relay)
    const fcmBefore = fcm.requests.length
    binary.send(JSON.stringify({ push_wake: { platform: "apns", token: deviceToken("ok") } }))
    binary.send(JSON.stringify({ conn_id: "client-x-00000000", frame: 1, push_wake: { platform: "fcm", token: deviceToken("ok") } }))
    await eventually(() => parsed(relay).some((l) => l["event"] === "push wake dropped" && l["server_id"] === serverId))
    await sleep(200)
    expect(parsed(relay).filter((l) => l["event"] === "push wake dropped" && l["server_id"] === serverId).map((l) => l["reason"]))
      .toEqual(["unsupported platform"])
    expect(await counts(relay)).toEqual(before)
    expect(fcm.requests.length).toBe(fcmBefore)
    binary.ws.close()
  })

  it("hygiene: no device token, access token, JWT, key material or reply free text in logs, /metrics or /healthz", async () => {
    const metrics = await (await fetch(relay.metricsUrl)).text()
    const health = await (await fetch(`${relay.httpUrl}/healthz`)).text()
    const text = [relay.logs.join("\n"), metrics, health].join("\n")
    const pemLines = key.pkcs8.split("\n").filter((l) => l.length > 20 && !l.startsWith("-----"))
    const secrets = [
      ...deviceTokens,
      ...oauth.issued,
      ...oauth.requests.map((r) => r.assertion),
      // The JWT's signature alone, and its claims segment.
      ...oauth.requests.flatMap((r) => r.assertion.split(".").slice(1)),
      ...pemLines,
      credentials,
      REPLY_SECRET,
      "Something about the request",
      "invalid_grant"
    ]
    expect(deviceTokens.length).toBeGreaterThan(15)
    expect(oauth.issued.length).toBeGreaterThanOrEqual(2)
    for (const secret of secrets) expect(text.includes(secret), `found a secret: ${secret.slice(0, 12)}…`).toBe(false)
    // Every admitted wake left exactly one line, and the counts agree with the lines.
    const lines = parsed(relay).filter((l) => l["event"] === "push wake sent" || l["event"] === "push wake failed")
    const c = await counts(relay)
    expect(c.sent + c.unregistered + c.token_fetch_failed + c.send_failed).toBe(lines.length)
    for (const line of lines) expect(line["token_fp"]).toMatch(/^[0-9a-f]{8}$/)
  })
})

describe("push on: other relays", () => {
  afterEach(() => killTracked())

  it("a key the token endpoint refuses: token_fetch_failed, described by the status only; FCM never asked", async () => {
    const stranger = makeTestKey()
    const r = await startPushRelay(serviceAccountJson(stranger, { token_uri: oauth.tokenUri }))
    const binary = await dialBinary(r.url, sid())
    const token = deviceToken("ok")
    wake(binary, token)
    expect(await outcomeLine(r, token)).toMatchObject({
      level: "warn",
      reason: "token_fetch_failed",
      error: "token endpoint HTTP 400"
    })
    expect(oauth.requests.at(-1)?.verified).toBe(false)
    expect(fcm.requests.some((req) => req.deviceToken === token)).toBe(false)
    expect((await counts(r)).token_fetch_failed).toBe(1)
    const logs = r.logs.join("\n")
    for (const secret of [REPLY_SECRET, "invalid_grant", token, oauth.requests.at(-1)!.assertion]) {
      expect(logs.includes(secret)).toBe(false)
    }
    binary.ws.close()
  })

  it("at --push-max-in-flight the next wake is refused `in-flight cap` (counted); shutdown interrupts the send in flight", async () => {
    // Credentials from a file this time (--fcm-credentials-file).
    const dir = mkdtempSync(Path.join(tmpdir(), "push-e2e-"))
    const file = Path.join(dir, "key.json")
    writeFileSync(file, credentials, { mode: 0o600 })
    const r = await startTrackedRelay([
      "--fcm-endpoint", fcm.url,
      "--fcm-credentials-file", file,
      "--drain-timeout", "5s",
      "--push-max-in-flight", "1"
    ])
    const serverId = sid()
    const binary = await dialBinary(r.url, serverId)
    const token = deviceToken("hang")
    wake(binary, token)
    await eventually(() => fcm.requests.some((req) => req.deviceToken === token))
    const capped = deviceToken("ok")
    wake(binary, capped)
    await eventually(async () => (await counts(r)).dropped === 1)
    expect(parsed(r).find((l) => l["event"] === "push wake dropped")).toMatchObject({
      level: "warn",
      server_id: serverId,
      reason: "in-flight cap"
    })
    expect(fcm.requests.some((req) => req.deviceToken === capped)).toBe(false)
    const stopping = Date.now()
    expect(await r.stop("SIGTERM")).toBe(0)
    expect(Date.now() - stopping).toBeLessThan(5_000)
    const line = await outcomeLine(r, token)
    expect(line).toMatchObject({ level: "warn", reason: "send_failed", error: "interrupted" })
    // Logged during the drain, before the relay said it was done.
    const events = parsed(r).map((l) => l["event"])
    expect(events.indexOf("push wake failed")).toBeGreaterThan(events.indexOf("shutdown started"))
  })
})

describe("push off", () => {
  afterEach(() => killTracked())

  it("is logged once at boot; a wake is dropped as `push off`, not counted; all five series at 0", async () => {
    const r = await startTrackedRelay([])
    const off = parsed(r).filter((l) => l["event"] === "push off")
    expect(off).toHaveLength(1)
    expect(off[0]).toMatchObject({ level: "info", reason: "credentials unset" })
    const serverId = sid()
    const binary = await dialBinary(r.url, serverId)
    const token = deviceToken("ok")
    wake(binary, token)
    await eventually(() => parsed(r).some((l) => l["event"] === "push wake dropped"))
    expect(parsed(r).find((l) => l["event"] === "push wake dropped")).toMatchObject({
      level: "warn",
      server_id: serverId,
      reason: "push off"
    })
    expect(await counts(r)).toEqual({ dropped: 0, sent: 0, unregistered: 0, token_fetch_failed: 0, send_failed: 0 })
    expect(parsed(r).filter((l) => l["event"] === "push off")).toHaveLength(1)
    expect(r.logs.join("\n").includes(token)).toBe(false)
    binary.ws.close()
  })
})
