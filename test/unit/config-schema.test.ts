/**
 * One set of rules for every way in (issue 17): each rule is refused by `RelayConfig.make`,
 * `RelayConfig.layerFromValues`, `RelayConfig.layerConfig` and the command line, each naming
 * the setting its own way.
 */
import { assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { BootProcess } from "../../src/config/Production.ts"
import { OUTBOX_ITEM_COST } from "../../src/config/RelayConfigSchema.ts"
import { ITEM_OVERHEAD } from "../../src/outbox/Outbox.ts"
import { RelayConfig } from "../../src/config/RelayConfig.ts"
import type { AcmeSettings, RelayConfigShape } from "../../src/config/RelayConfig.ts"
import { configOf, type Env, NO_CAPS, NON_ROOT, oneLine, refusalOf } from "../support/ConfigRun.ts"
import { plain, SPEC_DEFAULTS } from "../support/SpecDefaults.ts"

/** The process the production checks see: ordinary unless a case says root. */
const asProcess = (uid: number) => Effect.provideService(BootProcess, { uid, procStatus: NO_CAPS })

const make = (values: Partial<RelayConfigShape>, uid = NON_ROOT) => RelayConfig.make(values).pipe(asProcess(uid))

const fromLayer = (layer: Layer.Layer<RelayConfig, unknown>, uid = NON_ROOT) =>
  Effect.map(Layer.build(layer), (context) => Context.get(context, RelayConfig)).pipe(asProcess(uid))

/** `layerConfig("relay")` over `ConfigProvider.fromUnknown({ relay: settings })`. */
const fromSettings = (settings: Record<string, unknown>, uid = NON_ROOT) =>
  fromLayer(RelayConfig.layerConfig("relay"), uid).pipe(
    Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromUnknown({ relay: settings }, { preserveEmptyStrings: true }))
  )

const refused = <A, E, R>(effect: Effect.Effect<A, E, R>) => effect.pipe(Effect.flip, Effect.map(oneLine))

const acme = (extra: Partial<AcmeSettings> = {}): AcmeSettings => ({
  domains: ["relay.example.com"],
  directoryUrl: "https://ca.example/directory",
  email: undefined,
  caFile: undefined,
  certCache: "/var/lib/relay/certs",
  httpListen: { host: "", port: 80 },
  ...extra
})

interface Rule {
  readonly name: string
  readonly values: Partial<RelayConfigShape>
  readonly argv: ReadonlyArray<string>
  readonly env?: Env
  readonly settings: Record<string, unknown>
  readonly uid?: number
  /** The refusal of `make` and `layerFromValues`, of the command line, of `layerConfig("relay")`. */
  readonly make: string
  readonly cli: string
  readonly config: string
}

const SAME_CERT = { "domain": "relay.example.com", "https-listen": ":8443", "http-listen": ":8443" }

const rules: ReadonlyArray<Rule> = [
  {
    name: "a TLS certificate without its key",
    values: { tls: { certFile: "/c.pem" } as never },
    argv: ["--tls-cert", "/c.pem"],
    settings: { "tls-cert": "/c.pem" },
    make: "tls.certFile is set without tls.keyFile (give both or neither)",
    cli: "--tls-cert is set without --tls-key (give both or neither)",
    config: "relay.tls-cert is set without relay.tls-key (give both or neither)"
  },
  {
    name: "a TLS key without its certificate",
    values: { tls: { keyFile: "/k.pem" } as never },
    argv: ["--tls-key", "/k.pem"],
    settings: { "tls-key": "/k.pem" },
    make: "tls.keyFile is set without tls.certFile (give both or neither)",
    cli: "--tls-key is set without --tls-cert (give both or neither)",
    config: "relay.tls-key is set without relay.tls-cert (give both or neither)"
  },
  {
    name: "TLS files and ACME together",
    values: { tls: { certFile: "/c.pem", keyFile: "/k.pem" }, acme: acme() },
    argv: ["--domain", "relay.example.com", "--tls-cert", "/c.pem", "--tls-key", "/k.pem"],
    settings: { "domain": "relay.example.com", "tls-cert": "/c.pem", "tls-key": "/k.pem" },
    make: "acme.domains cannot be combined with tls.certFile (one way to serve TLS at a time)",
    cli: "--domain cannot be combined with --tls-cert (one way to serve TLS at a time)",
    config: "relay.domain cannot be combined with relay.tls-cert (one way to serve TLS at a time)"
  },
  {
    name: "an ACME setting without a domain",
    values: { acme: { email: "ops@example.com" } as never },
    argv: ["--acme-email", "ops@example.com"],
    settings: { "acme-email": "ops@example.com" },
    make: "acme.email needs acme.domains (ACME mode)",
    cli: "--acme-email needs --domain (ACME mode)",
    config: "relay.acme-email needs relay.domain (ACME mode)"
  },
  {
    name: "the challenge listener on the TLS listener's address",
    values: { listen: { host: "", port: 8443 }, acme: acme({ httpListen: { host: "", port: 8443 } }) },
    argv: ["--domain", "relay.example.com", "--https-listen", ":8443", "--http-listen", ":8443"],
    settings: SAME_CERT,
    make: "acme.httpListen and listen are the same address",
    cli: "--http-listen and --https-listen are the same address",
    config: "relay.http-listen and relay.https-listen are the same address"
  },
  {
    name: "two sources for the client address",
    values: { proxyProtocol: true, trustXForwardedFor: true },
    argv: ["--proxy-protocol", "--trust-x-forwarded-for"],
    settings: { "proxy-protocol": true, "trust-x-forwarded-for": "true" },
    make: "proxyProtocol and trustXForwardedFor are both set: two sources for the client address (use one)",
    cli: "--proxy-protocol and --trust-x-forwarded-for are both set: two sources for the client address (use one)",
    config: "relay.proxy-protocol and relay.trust-x-forwarded-for are both set: two sources for the client address (use one)"
  },
  {
    name: "an outbox that cannot hold one full-size frame and its item cost",
    values: { maxFrameBytes: 1_048_576, phoneOutboxBytes: 1_048_576 },
    argv: ["--max-frame-bytes", "1MiB", "--phone-outbox-bytes", "1MiB"],
    settings: { "max-frame-bytes": "1MiB", "phone-outbox-bytes": 1_048_576 },
    make: "phoneOutboxBytes: 1048576 is smaller than maxFrameBytes 1048576 + 64 (the cost of one item), so a full-size frame could never be queued",
    cli: "--phone-outbox-bytes: 1048576 is smaller than --max-frame-bytes 1048576 + 64 (the cost of one item), so a full-size frame could never be queued",
    config: "relay.phone-outbox-bytes: 1048576 is smaller than relay.max-frame-bytes 1048576 + 64 (the cost of one item), so a full-size frame could never be queued"
  },
  {
    name: "a relay-wide bound below one outbox",
    values: { maxBufferedBytes: 1_048_576 },
    argv: ["--max-buffered-bytes", "1MiB"],
    settings: { "max-buffered-bytes": "1MiB" },
    make: "maxBufferedBytes: 1048576 is smaller than phoneOutboxBytes 4194304, so no outbox could ever fill",
    cli: "--max-buffered-bytes: 1048576 is smaller than --phone-outbox-bytes 4194304, so no outbox could ever fill",
    config: "relay.max-buffered-bytes: 1048576 is smaller than relay.phone-outbox-bytes 4194304, so no outbox could ever fill"
  },
  {
    name: "the metrics listener on the public listener's address",
    values: { listen: { host: "127.0.0.1", port: 9090 } },
    argv: ["--listen", "127.0.0.1:9090"],
    settings: { listen: "127.0.0.1:9090" },
    make: "metricsListen and listen are the same address",
    cli: "--metrics-listen and --listen are the same address",
    config: "relay.metrics-listen and relay.listen are the same address"
  },
  {
    name: "the metrics port taken by a listener on every interface",
    values: { listen: { host: "0.0.0.0", port: 9090 } },
    argv: ["--listen", "0.0.0.0:9090"],
    settings: { listen: "0.0.0.0:9090" },
    make: "metricsListen and listen overlap: both use port 9090, and one binds every interface",
    cli: "--metrics-listen and --listen overlap: both use port 9090, and one binds every interface",
    config: "relay.metrics-listen and relay.listen overlap: both use port 9090, and one binds every interface"
  },
  {
    name: "a metrics listener off loopback",
    values: { metricsListen: { host: "0.0.0.0", port: 9090 } },
    argv: ["--metrics-listen", "0.0.0.0:9090"],
    settings: { "metrics-listen": "0.0.0.0:9090" },
    make: "metricsListen: \"0.0.0.0:9090\" is not a loopback IP literal (use 127.0.0.1:9090 or [::1]:9090, or \"\" to disable)",
    cli: "--metrics-listen: \"0.0.0.0:9090\" is not a loopback IP literal (use 127.0.0.1:9090 or [::1]:9090, or \"\" to disable)",
    config: "relay.metrics-listen: \"0.0.0.0:9090\" is not a loopback IP literal (use 127.0.0.1:9090 or [::1]:9090, or \"\" to disable)"
  },
  ...(["heartbeat-interval", "heartbeat-timeout", "probe-timeout", "write-timeout"] as const).map((flag): Rule => {
    const field = flag.replace(/-(\w)/g, (_, c: string) => c.toUpperCase())
    return {
      name: `${flag} of 0`,
      values: { [field]: Duration.zero },
      argv: [`--${flag}`, "0s"],
      settings: { [flag]: "0" },
      make: `${field}: must be longer than 0`,
      cli: `--${flag}: must be longer than 0`,
      config: `relay.${flag}: must be longer than 0`
    }
  }),
  {
    name: "no connection allowed at all",
    values: { maxConnections: 0 },
    argv: ["--max-connections", "0"],
    settings: { "max-connections": 0 },
    make: "maxConnections: must be at least 1",
    cli: "--max-connections: must be at least 1",
    config: "relay.max-connections: must be at least 1"
  },
  {
    name: "a log level that does not exist",
    values: { logLevel: "verbose" as never },
    argv: ["--log-level", "verbose"],
    settings: { "log-level": "verbose" },
    make: "logLevel: \"verbose\" is not one of trace, debug, info, warn, error, fatal",
    cli: "--log-level: \"verbose\" is not one of trace, debug, info, warn, error, fatal",
    config: "relay.log-level: \"verbose\" is not one of trace, debug, info, warn, error, fatal"
  },
  {
    name: "an FCM endpoint in clear text off loopback",
    values: { fcmEndpoint: "http://fcm.googleapis.com" },
    argv: ["--fcm-endpoint", "http://fcm.googleapis.com"],
    settings: { "fcm-endpoint": "http://fcm.googleapis.com" },
    make: "fcmEndpoint: \"http://fcm.googleapis.com\" must be https:// (http:// only to 127.x.y.z, [::1] or localhost)",
    cli: "--fcm-endpoint: \"http://fcm.googleapis.com\" must be https:// (http:// only to 127.x.y.z, [::1] or localhost)",
    config: "relay.fcm-endpoint: \"http://fcm.googleapis.com\" must be https:// (http:// only to 127.x.y.z, [::1] or localhost)"
  },
  {
    name: "production on the built-in listen address",
    values: { production: true },
    argv: [],
    env: { PYRYCODE_RELAY_PRODUCTION: "1" },
    settings: { production: "1" },
    make: "production: listen (or acme) must be given explicitly",
    cli: "PYRYCODE_RELAY_PRODUCTION=1: --listen (or PYRYCODE_RELAY_LISTEN) must be given explicitly",
    config: "relay.production=1: relay.listen must be given explicitly"
  },
  {
    name: "production as root",
    values: { production: true, listen: { host: "0.0.0.0", port: 8080 } },
    argv: ["--listen", "0.0.0.0:8080"],
    env: { PYRYCODE_RELAY_PRODUCTION: "1" },
    settings: { production: 1, listen: "0.0.0.0:8080" },
    uid: 0,
    make: "production: refusing to run as root (uid 0)",
    cli: "PYRYCODE_RELAY_PRODUCTION=1: refusing to run as root (uid 0)",
    config: "relay.production=1: refusing to run as root (uid 0)"
  }
]

describe("every rule, from every source", () => {
  for (const rule of rules) {
    it.effect(rule.name, () =>
      Effect.gen(function*() {
        const uid = rule.uid ?? NON_ROOT
        assert.strictEqual(yield* refused(make(rule.values, uid)), rule.make, "make")
        assert.strictEqual(yield* refused(fromLayer(RelayConfig.layerFromValues(rule.values), uid)), rule.make, "layerFromValues")
        assert.strictEqual(yield* refusalOf(rule.argv, rule.env, uid), rule.cli, "command line")
        assert.strictEqual(yield* refused(fromSettings(rule.settings, uid)), rule.config, "layerConfig")
      }))
  }
})

describe("RelayConfig.make and layerFromValues", () => {
  it.effect("with nothing given have SPEC §9's defaults", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(plain(yield* make({})), SPEC_DEFAULTS)
      assert.deepStrictEqual(plain(yield* fromLayer(RelayConfig.layerFromValues())), SPEC_DEFAULTS)
    }))

  it.effect("accept what they are given, over the defaults", () =>
    Effect.gen(function*() {
      const c = yield* make({ maxPhonesPerServer: 3, metricsListen: undefined, gracePeriod: Duration.seconds(2) })
      assert.deepStrictEqual(plain(c), { ...SPEC_DEFAULTS, maxPhonesPerServer: 3, metricsListen: undefined, gracePeriod: 2_000 })
      // An outbox of exactly one full-size item is enough.
      assert.strictEqual((yield* make({ maxFrameBytes: 1_000, phoneOutboxBytes: 1_064 })).phoneOutboxBytes, 1_064)
      // ACME settings as the command line builds them.
      assert.deepStrictEqual((yield* make({ acme: acme() })).acme, acme())
    }))

  it("check the outbox bound with the item cost the outbox charges", () => {
    assert.strictEqual(OUTBOX_ITEM_COST, ITEM_OVERHEAD)
  })

  it.effect("accept port 0 (the kernel's choice, read back by tests and apps); the command line does not", () =>
    Effect.gen(function*() {
      const c = yield* make({ listen: { host: "127.0.0.1", port: 0 }, metricsListen: { host: "127.0.0.1", port: 0 } })
      assert.strictEqual(c.listen.port, 0)
      assert.include(yield* refusalOf(["--listen", "127.0.0.1:0"]), "port 0 is out of range 1..65535")
      assert.strictEqual(yield* refused(make({ listen: { host: "127.0.0.1", port: 70_000 } })), "listen.port: 70000 is out of range 0..65535")
    }))

  it.effect("refuse values the command line could not even spell", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [Partial<RelayConfigShape>, string]> = [
        [{ maxConnections: 1.5 }, "maxConnections: must be a whole number"],
        [{ maxConnections: "5" as never }, "maxConnections: must be a number"],
        [{ gracePeriod: Duration.millis(-1) }, "gracePeriod: must not be negative"],
        [{ drainTimeout: Duration.hours(25) }, "drainTimeout: is longer than 24h"],
        [{ listen: { host: "a b", port: 80 } }, "listen.host: \"a b\" is not an IP literal or host name"],
        [{ tls: { certFile: "", keyFile: "/k.pem" } }, "tls.certFile: must be a file path, not empty"],
        [{ acme: acme({ domains: ["Relay.Example.com"] }) }, "acme.domains.0: \"Relay.Example.com\" is not one lower-case DNS name without a trailing dot"],
        [{ acme: acme({ domains: ["a.example.com", "a.example.com"] }) }, "acme.domains: \"a.example.com\" is listed twice"],
        [{ acme: acme({ domains: [] }) }, "acme.domains: must name at least one domain"],
        [{ acme: acme({ certCache: "certs" }) }, "acme.certCache: \"certs\" is not an absolute path"],
        [{ acme: acme({ directoryUrl: "http://ca.example/dir" }) }, "acme.directoryUrl: \"http://ca.example/dir\" is not an https:// URL"],
        [{ acme: { domains: ["relay.example.com"] } as never }, "acme.directoryUrl is missing (ACME mode needs it)"],
        [{ fcmEndpoint: "https://fcm.googleapis.com/" }, "fcmEndpoint: \"https://fcm.googleapis.com/\" is not written as \"https://fcm.googleapis.com\""]
      ]
      for (const [values, expected] of cases) assert.strictEqual(yield* refused(make(values)), expected)
    }))

  it.effect("refuse a malformed key without quoting any of it", () =>
    Effect.gen(function*() {
      const message = yield* refused(make({ fcmCredentials: { clientEmail: "x@y", privateKey: "SECRETISH-9f1c" } as never }))
      assert.strictEqual(message, "fcmCredentials: must be a service-account key from parseServiceAccount (value withheld)")
    }))
})

describe("RelayConfig.layerConfig", () => {
  it.effect("with nothing under its prefix has SPEC §9's defaults", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(plain(yield* fromSettings({})), SPEC_DEFAULTS)
    }))

  it.effect("reads what the command line reads, to the same config", () =>
    Effect.gen(function*() {
      const argv = [
        "--listen", "0.0.0.0:8443",
        "--grace-period", "2s",
        "--max-frame-bytes", "512KiB",
        "--trust-x-forwarded-for",
        "--metrics-listen", "",
        "--log-level", "WARN"
      ]
      const settings = {
        "listen": "0.0.0.0:8443",
        "grace-period": "2s",
        "max-frame-bytes": 524_288,
        "trust-x-forwarded-for": true,
        "metrics-listen": "",
        "log-level": "WARN"
      }
      const cli = plain(yield* configOf(argv))
      assert.deepStrictEqual(plain(yield* fromSettings(settings)), cli)
      assert.deepStrictEqual(cli, {
        ...SPEC_DEFAULTS,
        listen: { host: "0.0.0.0", port: 8443 },
        gracePeriod: 2_000,
        maxFrameBytes: 524_288,
        trustXForwardedFor: true,
        metricsListen: undefined,
        logLevel: "warn"
      })
    }))

  it.effect("reads PYRYCODE_RELAY_* variables through a constant-case environment provider", () =>
    Effect.gen(function*() {
      const env = { PYRYCODE_RELAY_MAX_CONNECTIONS: "10", PYRYCODE_RELAY_MAX_CONNECTIONS_PER_IP: "3", PYRYCODE_RELAY_GRACE_PERIOD: "1m" }
      const c = yield* fromLayer(RelayConfig.layerConfig("PYRYCODE_RELAY")).pipe(
        Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env }).pipe(ConfigProvider.constantCase))
      )
      assert.deepStrictEqual([c.maxConnections, c.maxConnectionsPerIp, Duration.toMillis(c.gracePeriod)], [10, 3, 60_000])
    }))

  it.effect("without a prefix reads the top level; domains may be a list; other lists are refused", () =>
    Effect.gen(function*() {
      const top = yield* fromLayer(RelayConfig.layerConfig()).pipe(
        Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromUnknown({ "max-phones-per-server": 2 }))
      )
      assert.strictEqual(top.maxPhonesPerServer, 2)
      const c = yield* fromSettings({ domain: ["Relay.Example.com", "b.example.com"] })
      assert.deepStrictEqual(c.acme?.domains, ["relay.example.com", "b.example.com"])
      assert.deepStrictEqual(c.listen, { host: "", port: 443 })
      assert.strictEqual(yield* refused(fromSettings({ listen: ["127.0.0.1:80"] })), "relay.listen: must be one value, not a list")
      assert.strictEqual(yield* refused(fromSettings({ "grace-period": "soon" })), "relay.grace-period: \"soon\" is not a duration (use 500ms, 30s, 2m)")
    }))
})
