import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Scope from "effect/Scope"
import { spawnSync } from "node:child_process"
import { RelayConfig } from "../../src/config/RelayConfig.ts"
import { isLoopbackLiteral, METRICS_CONTENT_TYPE, MetricsServer } from "../../src/http/MetricsServer.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import { BeforeScrape, PrometheusExport } from "../../src/observability/PrometheusExport.ts"

// --- the SPEC §8.2 series set, written out independently of Metrics.ts ------------------------

const directions = ["phone_to_binary", "binary_to_phone"]
const dropReasons: ReadonlyArray<readonly [string, string]> = [
  ["phone_to_binary", "no_binary"],
  ["phone_to_binary", "invalid_json"],
  ["phone_to_binary", "binary_write_failed"],
  ["binary_to_phone", "malformed_envelope"],
  ["binary_to_phone", "unknown_conn_id"],
  ["binary_to_phone", "backlog_full"],
  ["binary_to_phone", "phone_write_failed"],
  ["binary_to_phone", "evicted"],
  ["binary_to_phone", "grace_expired"],
  ["binary_to_phone", "shutdown"],
  ["binary_to_phone", "session_ended"]
]
const outcomes = ["accept", "reject_headers", "reject_409", "reject_404", "reject_429", "reject_rate_limit"]

const counters: ReadonlyArray<string> = [
  ...directions.map((d) => `pyrycode_relay_frames_forwarded_total{direction="${d}"}`),
  ...directions.map((d) => `pyrycode_relay_bytes_forwarded_total{direction="${d}"}`),
  ...dropReasons.map(([d, r]) => `pyrycode_relay_frames_dropped_total{direction="${d}",reason="${r}"}`),
  "pyrycode_relay_grace_expiries_total",
  "pyrycode_relay_grace_reclaims_total",
  "pyrycode_relay_takeovers_total",
  ...["server", "client"].flatMap((e) =>
    outcomes.map((o) => `pyrycode_relay_ws_upgrade_attempts_total{endpoint="${e}",outcome="${o}"}`)
  ),
  ...["no_server", "server_in_use", "phones_at_cap", "ratelimit"].map((k) =>
    `pyrycode_relay_register_failures_total{kind="${k}"}`
  ),
  ...["conn_cap", "per_ip_cap", "handshake_timeout", "draining", "proxy_header"].map((r) =>
    `pyrycode_relay_connections_rejected_total{reason="${r}"}`
  ),
  // PUSH.md §4
  ...["dropped", "sent", "unregistered", "token_fetch_failed", "send_failed"].map((o) =>
    `pyrycode_relay_push_wakes_total{outcome="${o}"}`
  ),
  // EDGE.md §1.
  ...["issued", "failed"].map((o) => `pyrycode_relay_certificate_orders_total{outcome="${o}"}`)
]
const gauges: ReadonlyArray<string> = [
  "pyrycode_relay_connected_binaries",
  "pyrycode_relay_connected_phones",
  "pyrycode_relay_buffered_bytes",
  "pyrycode_relay_certificate_expiry_timestamp_seconds"
]

const familyOf = (series: string): string => series.split("{")[0] ?? series

interface Parsed {
  /** Every sample line, `series -> values` (more than one value means a duplicated series). */
  readonly samples: Map<string, Array<number>>
  /** `# TYPE` lines, `family -> types`. */
  readonly types: Map<string, Array<string>>
}

const parse = (text: string): Parsed => {
  const samples = new Map<string, Array<number>>()
  const types = new Map<string, Array<string>>()
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("# HELP ")) continue
    if (line.startsWith("# TYPE ")) {
      const [family = "", type = ""] = line.slice("# TYPE ".length).split(" ")
      types.set(family, [...(types.get(family) ?? []), type])
      continue
    }
    const space = line.lastIndexOf(" ")
    const series = line.slice(0, space)
    samples.set(series, [...(samples.get(series) ?? []), Number(line.slice(space + 1))])
  }
  return { samples, types }
}

/** Each test reads its own registry: updates elsewhere cannot leak into exact values. */
const withFreshRegistry = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.provideService(self, Metric.MetricRegistry, new Map())

const scrapeAfter = (updates: Effect.Effect<void>) =>
  Effect.gen(function*() {
    const { scrape } = yield* PrometheusExport
    yield* updates
    return yield* scrape
  }).pipe(Effect.provide(PrometheusExport.layer), withFreshRegistry)

describe("PrometheusExport", () => {
  it.effect("every SPEC series exists once, at 0 except what was counted, with its TYPE", () =>
    Effect.gen(function*() {
      const text = yield* scrapeAfter(Effect.all([
        Metric.update(Metrics.framesForwardedPhoneToBinary, 3),
        Metric.update(Metrics.graceExpiries, 1),
        Metric.update(Metrics.upgradeAttempts.client.reject_404, 1),
        Metric.update(Metrics.registerFailures.no_server, 1),
        Metric.update(Metrics.connectedPhones, 2)
      ], { discard: true }))
      const { samples, types } = parse(text)

      const expected = new Map<string, number>([...counters, ...gauges].map((series) => [series, 0]))
      expected.set(`pyrycode_relay_frames_forwarded_total{direction="phone_to_binary"}`, 3)
      expected.set("pyrycode_relay_grace_expiries_total", 1)
      expected.set(`pyrycode_relay_ws_upgrade_attempts_total{endpoint="client",outcome="reject_404"}`, 1)
      expected.set(`pyrycode_relay_register_failures_total{kind="no_server"}`, 1)
      expected.set("pyrycode_relay_connected_phones", 2)

      assert.deepStrictEqual([...samples.keys()].sort(), [...expected.keys()].sort())
      for (const [series, value] of expected) {
        assert.deepStrictEqual(samples.get(series), [value], series)
      }

      const families = new Map<string, string>([
        ...counters.map((s) => [familyOf(s), "counter"] as const),
        ...gauges.map((s) => [s, "gauge"] as const)
      ])
      assert.deepStrictEqual([...types.keys()].sort(), [...families.keys()].sort())
      for (const [family, type] of families) {
        assert.deepStrictEqual(types.get(family), [type], family)
      }

      assert.notInclude(text, "target_info")
      assert.notInclude(text, "otel_scope")
      assert.notInclude(text, "# UNIT")
      assert.notInclude(text, "_total_total")
    }))

  it.effect("a fresh boot shows every series at 0", () =>
    Effect.gen(function*() {
      const { samples } = parse(yield* scrapeAfter(Effect.void))
      assert.strictEqual(samples.size, counters.length + gauges.length)
      for (const [series, values] of samples) assert.deepStrictEqual(values, [0], series)
    }))

  it.effect("the BeforeScrape hook runs before every scrape", () =>
    Effect.gen(function*() {
      let phones = 0
      const refresh = Effect.suspend(() => Metric.update(Metrics.connectedPhones, ++phones))
      const [first, second] = yield* Effect.gen(function*() {
        const { scrape } = yield* PrometheusExport
        return [yield* scrape, yield* scrape] as const
      }).pipe(
        Effect.provide(PrometheusExport.layer.pipe(Layer.provide(Layer.succeed(BeforeScrape, refresh)))),
        withFreshRegistry
      )
      assert.deepStrictEqual(parse(first).samples.get("pyrycode_relay_connected_phones"), [1])
      assert.deepStrictEqual(parse(second).samples.get("pyrycode_relay_connected_phones"), [2])
    }))

  it.effect("promtool check metrics accepts the scrape", () =>
    Effect.gen(function*() {
      const text = yield* scrapeAfter(Metric.update(Metrics.takeovers, 1))
      const probe = spawnSync("promtool", ["--version"], { encoding: "utf8" })
      if (probe.error !== undefined) {
        console.warn("promtool not found: skipped the promtool check")
        return
      }
      const check = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" })
      assert.strictEqual(check.status, 0, `promtool: ${check.stdout}${check.stderr}`)
      // promtool is silent when the exposition has no problems (lint findings are printed).
      assert.strictEqual(`${check.stdout}${check.stderr}`.trim(), "")
    }))
})

// --- the listener ---------------------------------------------------------------------------

const serverLayer = (metricsListen: { host: string; port: number } | undefined) =>
  MetricsServer.layer.pipe(
    Layer.provide(PrometheusExport.layer),
    Layer.provide(RelayConfig.layerFromValues({ metricsListen }))
  )

const get = (url: string, init?: RequestInit) =>
  Effect.promise(async () => {
    const response = await fetch(url, init)
    return { status: response.status, contentType: response.headers.get("content-type"), body: await response.text() }
  })

describe("MetricsServer", () => {
  it.live("serves GET /metrics on its loopback listener and 404 for everything else", () =>
    Effect.gen(function*() {
      const { address } = yield* MetricsServer
      assert.isDefined(address)
      if (address === undefined) return
      assert.strictEqual(address.host, "127.0.0.1")
      assert.isAbove(address.port, 0)
      const base = `http://127.0.0.1:${address.port}`

      const metrics = yield* get(`${base}/metrics`)
      assert.strictEqual(metrics.status, 200)
      assert.strictEqual(metrics.contentType, METRICS_CONTENT_TYPE)
      assert.strictEqual(METRICS_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
      assert.include(metrics.body, "# TYPE pyrycode_relay_frames_forwarded_total counter\n")

      for (const path of ["/other", "/metrics/", "/metricsx", "/", "/healthz"]) {
        assert.strictEqual((yield* get(`${base}${path}`)).status, 404, path)
      }
      assert.strictEqual((yield* get(`${base}/metrics`, { method: "POST" })).status, 404, "POST /metrics")
    }).pipe(Effect.provide(serverLayer({ host: "127.0.0.1", port: 0 })), withFreshRegistry))

  it.live("closing its scope closes the listener", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(serverLayer({ host: "127.0.0.1", port: 0 }), scope)
      const { address } = Context.get(context, MetricsServer)
      assert.isDefined(address)
      const url = `http://127.0.0.1:${address?.port}/metrics`
      assert.strictEqual((yield* get(url)).status, 200)
      yield* Scope.close(scope, Exit.void)
      const after = yield* Effect.exit(Effect.tryPromise(() => fetch(url)))
      assert.isTrue(Exit.isFailure(after))
    }).pipe(withFreshRegistry))

  it.live("a taken port fails the layer with MetricsListenError", () =>
    Effect.gen(function*() {
      const { address } = yield* MetricsServer
      const taken = { host: "127.0.0.1", port: address?.port ?? 0 }
      const error = yield* Effect.flip(Layer.build(Layer.fresh(serverLayer(taken))))
      assert.strictEqual(error._tag, "MetricsListenError")
      assert.strictEqual(error._tag === "MetricsListenError" ? error.port : undefined, taken.port)
    }).pipe(Effect.provide(serverLayer({ host: "127.0.0.1", port: 0 })), withFreshRegistry))

  it.live("does nothing when the metrics listener is disabled", () =>
    Effect.gen(function*() {
      const { address } = yield* MetricsServer
      assert.isUndefined(address)
    }).pipe(Effect.provide(serverLayer(undefined)), withFreshRegistry))
})

describe("isLoopbackLiteral", () => {
  const table: ReadonlyArray<readonly [string, boolean]> = [
    ["127.0.0.1", true],
    ["127.255.255.255", true],
    ["127.1.2.3", true],
    ["::1", true],
    ["0.0.0.0", false],
    ["10.0.0.1", false],
    ["localhost", false],
    ["128.0.0.1", false],
    ["127.0.0.256", false],
    ["127.0.0", false],
    ["127.0.0.1.1", false],
    ["127.0.0.01", false],
    [" 127.0.0.1", false],
    ["[::1]", false],
    ["::", false],
    ["::ffff:127.0.0.1", false],
    ["", false]
  ]
  for (const [host, expected] of table) {
    it(`${JSON.stringify(host)} is ${expected ? "" : "not "}a loopback literal`, () => {
      assert.strictEqual(isLoopbackLiteral(host), expected)
    })
  }
})
