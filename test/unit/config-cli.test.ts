import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import { BootRefusal, envName, flags, loadRelayConfig, parseArgs, usage, version } from "../../src/config/Cli.ts"
import { defaults } from "../../src/config/RelayConfig.ts"
import type { RelayConfigShape } from "../../src/config/RelayConfig.ts"
import { isLoopbackLiteral, parseDuration, parseListen, parseSize } from "../../src/config/Units.ts"
import { CLIENT_EMAIL, makeTestKey, serviceAccountJson } from "../support/PushKeys.ts"

type Env = Record<string, string | undefined>

const NON_ROOT = 1000

/** `/proc/self/status` of an ordinary process: no effective capabilities. */
const NO_CAPS = (): Result.Result<string, string> => Result.succeed("Name:\tnode\nCapEff:\t0000000000000000\n")

const configOf = (argv: ReadonlyArray<string>, env: Env = {}, uid: number | undefined = NON_ROOT, status = NO_CAPS) =>
  loadRelayConfig(argv, env, uid, status).pipe(
    Effect.flatMap((outcome) => outcome._tag === "Run" ? Effect.succeed(outcome.config) : Effect.die(outcome._tag))
  )

/** The refusal's message; also pins that it is a BootRefusal and fits on one line. */
const refusalOf = (argv: ReadonlyArray<string>, env: Env = {}, uid: number | undefined = NON_ROOT, status = NO_CAPS) =>
  loadRelayConfig(argv, env, uid, status).pipe(
    Effect.flip,
    Effect.map((e) => {
      assert.instanceOf(e, BootRefusal)
      assert.strictEqual(e._tag, "BootRefusal")
      assert.notInclude(e.message, "\n")
      return e.message
    })
  )

const ms = (d: Duration.Duration) => Duration.toMillis(d)

const ok = <A>(r: Result.Result<A, string>): A => {
  if (Result.isFailure(r)) throw new Error(`expected success, got ${r.failure}`)
  return r.success
}
const bad = <A>(r: Result.Result<A, string>): string => {
  if (Result.isSuccess(r)) throw new Error(`expected failure, got ${JSON.stringify(r.success)}`)
  return r.failure
}

describe("Units", () => {
  it("parses durations in ms, s, m, h and Go-style sums", () => {
    assert.strictEqual(ms(ok(parseDuration("500ms"))), 500)
    assert.strictEqual(ms(ok(parseDuration("30s"))), 30_000)
    assert.strictEqual(ms(ok(parseDuration("2m"))), 120_000)
    assert.strictEqual(ms(ok(parseDuration("1h"))), 3_600_000)
    assert.strictEqual(ms(ok(parseDuration("1m30s"))), 90_000)
    assert.strictEqual(ms(ok(parseDuration("0"))), 0)
    assert.strictEqual(ms(ok(parseDuration("0s"))), 0)
  })

  it("refuses junk, negative, fractional, unitless and over-long durations", () => {
    assert.include(bad(parseDuration("abc")), "is not a duration (use 500ms, 30s, 2m)")
    assert.include(bad(parseDuration("-5s")), "negative")
    assert.include(bad(parseDuration("30")), "no unit")
    for (const raw of ["", "1.5s", "30 s", "30S", "s", "5d", "1e3ms", "+5s", "30s "]) {
      assert.include(bad(parseDuration(raw)), "not a duration", raw)
    }
    assert.include(bad(parseDuration("25h")), "longer than 24h")
  })

  it("parses sizes in bytes, KiB, MiB", () => {
    assert.strictEqual(ok(parseSize("262144")), 262_144)
    assert.strictEqual(ok(parseSize("256KiB")), 262_144)
    assert.strictEqual(ok(parseSize("4MiB")), 4_194_304)
    assert.strictEqual(ok(parseSize("1GiB")), 1_073_741_824)
    for (const raw of ["", "4mb", "256KB", "1.5MiB", "4 MiB", "abc", "0x10"]) {
      assert.include(bad(parseSize(raw)), "not a size", raw)
    }
    assert.include(bad(parseSize("-1")), "negative")
    assert.include(bad(parseSize("99999999999999999999")), "too large")
  })

  it("parses listen addresses and refuses port 0, port > 65535 and missing hosts", () => {
    assert.deepStrictEqual(ok(parseListen("127.0.0.1:8080")), { host: "127.0.0.1", port: 8080 })
    assert.deepStrictEqual(ok(parseListen("[::1]:9090")), { host: "::1", port: 9090 })
    assert.deepStrictEqual(ok(parseListen("[::]:443")), { host: "::", port: 443 })
    assert.deepStrictEqual(ok(parseListen("relay.internal:65535")), { host: "relay.internal", port: 65535 })
    assert.include(bad(parseListen("127.0.0.1:0")), "out of range")
    assert.include(bad(parseListen("127.0.0.1:65536")), "out of range")
    assert.include(bad(parseListen("127.0.0.1:99999")), "out of range")
    assert.include(bad(parseListen(":8080")), "no host")
    for (const raw of ["", "127.0.0.1", "::1:9090", "[::1]", "[::1]9090", "[1.2.3.4]:80", "999.1.1.1:80", "h:p", "a b:80"]) {
      bad(parseListen(raw))
    }
  })

  it("knows loopback IP literals", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "::1", "0:0:0:0:0:0:0:1"]) assert.isTrue(isLoopbackLiteral(host), host)
    for (const host of ["0.0.0.0", "10.0.0.1", "::", "localhost", "::ffff:127.0.0.1", "128.0.0.1"]) {
      assert.isFalse(isLoopbackLiteral(host), host)
    }
  })
})

describe("parseArgs", () => {
  const tagOf = (argv: ReadonlyArray<string>) => Effect.runSync(parseArgs(argv))._tag

  it("recognises --help, -h and --version, even next to a broken flag", () => {
    assert.strictEqual(tagOf(["--help"]), "Help")
    assert.strictEqual(tagOf(["-h"]), "Help")
    assert.strictEqual(tagOf(["--version"]), "Version")
    assert.strictEqual(tagOf(["--bogus", "--help"]), "Help")
    assert.strictEqual(tagOf(["--listen", "1.2.3.4:80", "--version"]), "Version")
  })

  it("keeps values as text, in both --flag value and --flag=value forms", () => {
    const parsed = Effect.runSync(parseArgs(["--listen", "0.0.0.0:80", "--grace-period=5s", "--trust-x-forwarded-for"]))
    assert.deepStrictEqual(parsed, {
      _tag: "Flags",
      flags: { listen: "0.0.0.0:80", "grace-period": "5s", "trust-x-forwarded-for": "true" }
    })
  })
})

describe("loadRelayConfig", () => {
  it.effect("with nothing given equals the SPEC §9 defaults", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* configOf([]), defaults)
    }))

  it.effect("--help and --version are outcomes, not configs", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* loadRelayConfig(["--help"], {}, NON_ROOT), { _tag: "Help" })
      assert.deepStrictEqual(yield* loadRelayConfig(["--version"], {}, NON_ROOT), { _tag: "Version" })
      // Help stays reachable when the environment is broken.
      assert.deepStrictEqual(yield* loadRelayConfig(["-h"], { PYRYCODE_RELAY_PRODUCTION: "yes" }, 0), { _tag: "Help" })
    }))

  it.effect("parses every flag", () =>
    Effect.gen(function*() {
      const c = yield* configOf([
        "--listen", "0.0.0.0:80",
        "--tls-cert", "/etc/relay/cert.pem",
        "--tls-key=/etc/relay/key.pem",
        "--metrics-listen", "127.0.0.2:9100",
        "--max-connections", "5000",
        "--max-connections-per-ip", "0",
        "--trust-x-forwarded-for",
        "--grace-period", "500ms",
        "--heartbeat-interval", "2m",
        "--heartbeat-timeout", "45s",
        "--probe-timeout", "3s",
        "--write-timeout", "1m30s",
        "--message-timeout", "1h",
        "--handshake-timeout", "2s",
        "--close-timeout", "7s",
        "--max-frame-bytes", "512KiB",
        "--max-phones-per-server", "4",
        "--phone-outbox-bytes", "8MiB",
        "--max-buffered-bytes", "1073741824",
        "--rate-limit-burst", "0",
        "--rate-limit-refill", "250ms",
        "--drain-timeout", "0",
        "--log-format", "pretty",
        "--log-level", "debug",
        "--fcm-project-id", "my-project",
        "--fcm-endpoint", "http://127.0.0.1:8999/",
        "--push-burst", "3",
        "--push-refill", "2s",
        "--push-max-in-flight", "4"
      ])
      const expected: RelayConfigShape = {
        listen: { host: "0.0.0.0", port: 80 },
        tls: { certFile: "/etc/relay/cert.pem", keyFile: "/etc/relay/key.pem" },
        metricsListen: { host: "127.0.0.2", port: 9100 },
        maxConnections: 5000,
        maxConnectionsPerIp: 0,
        trustXForwardedFor: true,
        proxyProtocol: false,
        acme: undefined,
        gracePeriod: Duration.millis(500),
        heartbeatInterval: Duration.minutes(2),
        heartbeatTimeout: Duration.seconds(45),
        probeTimeout: Duration.seconds(3),
        writeTimeout: Duration.seconds(90),
        messageTimeout: Duration.hours(1),
        handshakeTimeout: Duration.seconds(2),
        closeTimeout: Duration.seconds(7),
        maxFrameBytes: 524_288,
        maxPhonesPerServer: 4,
        phoneOutboxBytes: 8_388_608,
        maxBufferedBytes: 1_073_741_824,
        rateLimitBurst: 0,
        rateLimitRefill: Duration.millis(250),
        drainTimeout: Duration.zero,
        logFormat: "pretty",
        logLevel: "debug",
        production: false,
        fcmCredentials: undefined,
        fcmProjectId: "my-project",
        fcmEndpoint: "http://127.0.0.1:8999",
        pushBurst: 3,
        pushRefill: Duration.seconds(2),
        pushMaxInFlight: 4
      }
      const durations = (x: RelayConfigShape) =>
        Object.fromEntries(Object.entries(x).map(([k, v]) => [k, Duration.isDuration(v) ? ms(v) : v]))
      assert.deepStrictEqual(durations(c), durations(expected))
    }))

  it.effect("--proxy-protocol: bare, =true, =false, from the variable; never with --trust-x-forwarded-for", () =>
    Effect.gen(function*() {
      assert.isFalse((yield* configOf([])).proxyProtocol)
      assert.isTrue((yield* configOf(["--proxy-protocol"])).proxyProtocol)
      assert.isTrue((yield* configOf(["--proxy-protocol=true"])).proxyProtocol)
      assert.isFalse((yield* configOf(["--proxy-protocol=false"])).proxyProtocol)
      const both = yield* refusalOf(["--proxy-protocol", "--trust-x-forwarded-for"])
      assert.include(both, "--proxy-protocol")
      assert.include(both, "--trust-x-forwarded-for")
      assert.include(both, "two sources")
      // Off on one side is fine.
      assert.isTrue((yield* configOf(["--proxy-protocol", "--trust-x-forwarded-for=false"])).proxyProtocol)
    }))

  describe("ACME mode (--domain)", () => {
    it.effect("--domain alone: Let's Encrypt, :443 for TLS, :80 for challenges, the cache under $HOME", () =>
      Effect.gen(function*() {
        assert.isUndefined((yield* configOf([])).acme)
        const c = yield* configOf(["--domain", "relay.example.com"], { HOME: "/home/relay" })
        assert.deepStrictEqual(c.acme, {
          domains: ["relay.example.com"],
          directoryUrl: "https://acme-v02.api.letsencrypt.org/directory",
          email: undefined,
          caFile: undefined,
          certCache: "/home/relay/.pyrycode-relay/certs",
          httpListen: { host: "", port: 80 }
        })
        assert.deepStrictEqual(c.listen, { host: "", port: 443 })
        assert.isUndefined(c.tls)
      }))

    it.effect("names: repeated flag or commas, lower-cased, trailing dot dropped, each once", () =>
      Effect.gen(function*() {
        const c = yield* configOf(["--domain", "Relay.Example.COM", "--domain", "b.example.com, relay.example.com.,c.example.org"])
        assert.deepStrictEqual(c.acme?.domains, ["relay.example.com", "b.example.com", "c.example.org"])
        const fromEnv = yield* configOf([], { PYRYCODE_RELAY_DOMAIN: "x.example.com,y.example.com" })
        assert.deepStrictEqual(fromEnv.acme?.domains, ["x.example.com", "y.example.com"])
      }))

    it.effect("every ACME flag is read", () =>
      Effect.gen(function*() {
        const c = yield* configOf([
          "--domain", "relay.example.com",
          "--acme-directory", "https://acme-staging-v02.api.letsencrypt.org/directory",
          "--acme-email", "ops@example.com",
          "--acme-ca-file", "/etc/relay/ca.pem",
          "--cert-cache", "/var/lib/relay/certs",
          "--https-listen", "[::]:8443",
          "--http-listen", "0.0.0.0:8080"
        ])
        assert.deepStrictEqual(c.acme, {
          domains: ["relay.example.com"],
          directoryUrl: "https://acme-staging-v02.api.letsencrypt.org/directory",
          email: "ops@example.com",
          caFile: "/etc/relay/ca.pem",
          certCache: "/var/lib/relay/certs",
          httpListen: { host: "0.0.0.0", port: 8080 }
        })
        assert.deepStrictEqual(c.listen, { host: "::", port: 8443 })
      }))

    it.effect("refusals: TLS files or --listen next to --domain, ACME flags without it, bad names and values", () =>
      Effect.gen(function*() {
        const d = ["--domain", "relay.example.com"]
        assert.include(yield* refusalOf([...d, "--tls-cert", "/c.pem", "--tls-key", "/k.pem"]), "--domain cannot be combined with --tls-cert")
        assert.include(yield* refusalOf([...d, "--listen", "127.0.0.1:8080"]), "--domain cannot be combined with --listen")
        assert.include(yield* refusalOf(["--acme-email", "ops@example.com"]), "--acme-email needs --domain")
        assert.include(yield* refusalOf(["--https-listen", ":443"]), "--https-listen needs --domain")
        assert.include(yield* refusalOf([], { PYRYCODE_RELAY_CERT_CACHE: "/x" }), "PYRYCODE_RELAY_CERT_CACHE needs --domain")
        assert.include(yield* refusalOf(["--domain", "192.0.2.1"]), "is an IP address")
        assert.include(yield* refusalOf(["--domain", "*.example.com"]), "is a wildcard")
        assert.include(yield* refusalOf(["--domain", "bad_name.example.com"]), "is not a DNS name")
        assert.include(yield* refusalOf(["--domain", "a.example.com,,b.example.com"]), "has an empty name")
        assert.include(yield* refusalOf([...d, "--acme-directory", "http://ca.example.com/dir"]), "is not an https:// URL")
        assert.include(yield* refusalOf([...d, "--acme-email", "not-an-address"]), "is not an email address")
        assert.include(yield* refusalOf([...d, "--https-listen", ":8443", "--http-listen", ":8443"]), "are the same address")
        assert.include(yield* refusalOf([...d, "--http-listen", ":0"]), "--http-listen")
      }))

    it.effect("production in ACME mode needs no --listen (--https-listen is the listener)", () =>
      Effect.gen(function*() {
        assert.isTrue((yield* configOf(["--domain", "relay.example.com"], { PYRYCODE_RELAY_PRODUCTION: "1" })).production)
      }))
  })

  it.effect("--trust-x-forwarded-for accepts =true and =false", () =>
    Effect.gen(function*() {
      assert.isTrue((yield* configOf(["--trust-x-forwarded-for=true"])).trustXForwardedFor)
      assert.isFalse((yield* configOf(["--trust-x-forwarded-for=false"])).trustXForwardedFor)
      assert.include(yield* refusalOf(["--trust-x-forwarded-for=yes"]), "--trust-x-forwarded-for:")
    }))

  it.effect("reads PYRYCODE_RELAY_<FLAG> when the flag is absent, and the flag wins when both are set", () =>
    Effect.gen(function*() {
      const env = {
        PYRYCODE_RELAY_GRACE_PERIOD: "2m",
        PYRYCODE_RELAY_MAX_CONNECTIONS_PER_IP: "8",
        PYRYCODE_RELAY_TRUST_X_FORWARDED_FOR: "true",
        PYRYCODE_RELAY_LISTEN: "10.0.0.5:8443",
        PYRYCODE_RELAY_LOG_LEVEL: "WARN"
      }
      const fromEnv = yield* configOf([], env)
      assert.strictEqual(ms(fromEnv.gracePeriod), 120_000)
      assert.strictEqual(fromEnv.maxConnectionsPerIp, 8)
      assert.isTrue(fromEnv.trustXForwardedFor)
      assert.deepStrictEqual(fromEnv.listen, { host: "10.0.0.5", port: 8443 })
      assert.strictEqual(fromEnv.logLevel, "warn")

      const flagWins = yield* configOf(["--grace-period", "5s", "--trust-x-forwarded-for=false"], env)
      assert.strictEqual(ms(flagWins.gracePeriod), 5_000)
      assert.isFalse(flagWins.trustXForwardedFor)
      assert.strictEqual(flagWins.maxConnectionsPerIp, 8)
    }))

  it.effect("a flag wins even over an invalid variable, which is then never read", () =>
    Effect.gen(function*() {
      const c = yield* configOf(["--grace-period", "5s"], { PYRYCODE_RELAY_GRACE_PERIOD: "abc" })
      assert.strictEqual(ms(c.gracePeriod), 5_000)
    }))

  it("names the variable for every flag as upper snake case", () => {
    assert.strictEqual(envName("grace-period"), "PYRYCODE_RELAY_GRACE_PERIOD")
    assert.strictEqual(envName("trust-x-forwarded-for"), "PYRYCODE_RELAY_TRUST_X_FORWARDED_FOR")
    assert.strictEqual(envName("max-connections-per-ip"), "PYRYCODE_RELAY_MAX_CONNECTIONS_PER_IP")
    for (const f of flags) assert.strictEqual(envName(f.name), `PYRYCODE_RELAY_${f.name.toUpperCase().replaceAll("-", "_")}`)
  })

  it.effect("--metrics-listen \"\" disables the metrics listener, in every spelling", () =>
    Effect.gen(function*() {
      assert.isUndefined((yield* configOf(["--metrics-listen", ""])).metricsListen)
      assert.isUndefined((yield* configOf(["--metrics-listen="])).metricsListen)
      assert.isUndefined((yield* configOf([], { PYRYCODE_RELAY_METRICS_LISTEN: "" })).metricsListen)
    }))

  it.effect("--metrics-listen accepts loopback IP literals only", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual((yield* configOf(["--metrics-listen", "[::1]:9090"])).metricsListen, { host: "::1", port: 9090 })
      assert.deepStrictEqual((yield* configOf(["--metrics-listen", "127.9.9.9:1"])).metricsListen, { host: "127.9.9.9", port: 1 })
      for (const raw of ["0.0.0.0:9090", "10.0.0.1:9090", "[::]:9090", "localhost:9090"]) {
        const message = yield* refusalOf(["--metrics-listen", raw])
        assert.match(message, /^--metrics-listen: .*not a loopback IP literal/, raw)
      }
      assert.match(
        yield* refusalOf([], { PYRYCODE_RELAY_METRICS_LISTEN: "0.0.0.0:9090" }),
        /^PYRYCODE_RELAY_METRICS_LISTEN: /
      )
    }))

  it.effect("refuses bad values, naming the flag and why", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
        [["--grace-period", "abc"], "--grace-period: \"abc\" is not a duration (use 500ms, 30s, 2m)"],
        [["--grace-period", "-5s"], "--grace-period: \"-5s\" is negative"],
        [["--heartbeat-interval", "0s"], "--heartbeat-interval: must be longer than 0"],
        [["--rate-limit-refill", "0"], "--rate-limit-refill: must be longer than 0"],
        [["--listen", "127.0.0.1:0"], "--listen: \"127.0.0.1:0\": port 0 is out of range 1..65535"],
        [["--listen", "127.0.0.1:65536"], "--listen: \"127.0.0.1:65536\": port 65536 is out of range 1..65535"],
        [["--metrics-listen", "[::1]:0"], "--metrics-listen: \"[::1]:0\": port 0 is out of range"],
        [["--max-connections", "0"], "--max-connections: must be at least 1"],
        [["--max-connections", "-3"], "--max-connections: \"-3\" is negative"],
        [["--max-connections-per-ip", "-1"], "--max-connections-per-ip: \"-1\" is negative"],
        [["--rate-limit-burst", "-1"], "--rate-limit-burst: \"-1\" is negative"],
        [["--rate-limit-burst", "ten"], "--rate-limit-burst: \"ten\" is not a whole number"],
        [["--max-phones-per-server", "0"], "--max-phones-per-server: must be at least 1"],
        [["--max-frame-bytes", "0"], "--max-frame-bytes: must be at least 1"],
        [["--max-frame-bytes", "256KB"], "--max-frame-bytes: \"256KB\" is not a size"],
        [["--phone-outbox-bytes", "-4MiB"], "--phone-outbox-bytes: \"-4MiB\" is negative"],
        [["--log-format", "text"], "--log-format: \"text\" is not one of json, pretty"],
        [["--log-level", "verbose"], "--log-level: \"verbose\" is not one of trace, debug, info, warn, error, fatal"],
        [["--tls-cert", ""], "--tls-cert: must be a file path"]
      ]
      for (const [argv, expected] of cases) {
        assert.include(yield* refusalOf(argv), expected, argv.join(" "))
      }
    }))

  it.effect("refuses bad variables, naming the variable", () =>
    Effect.gen(function*() {
      assert.include(
        yield* refusalOf([], { PYRYCODE_RELAY_GRACE_PERIOD: "abc" }),
        "PYRYCODE_RELAY_GRACE_PERIOD: \"abc\" is not a duration"
      )
      assert.include(yield* refusalOf([], { PYRYCODE_RELAY_MAX_CONNECTIONS: "0" }), "PYRYCODE_RELAY_MAX_CONNECTIONS:")
      assert.include(yield* refusalOf([], { PYRYCODE_RELAY_LOG_FORMAT: "" }), "PYRYCODE_RELAY_LOG_FORMAT:")
    }))

  it.effect("refuses unknown flags, stray arguments, missing and repeated values", () =>
    Effect.gen(function*() {
      assert.include(yield* refusalOf(["--bogus"]), "unknown flag \"--bogus\"")
      assert.include(yield* refusalOf(["--bogus=1"]), "unknown flag \"--bogus\"")
      assert.include(yield* refusalOf(["--production"]), "unknown flag \"--production\"")
      assert.include(yield* refusalOf(["-listen", "1.2.3.4:80"]), "unexpected argument \"-listen\"")
      assert.include(yield* refusalOf(["serve"]), "unexpected argument \"serve\"")
      assert.include(yield* refusalOf(["--trust-x-forwarded-for", "false"]), "unexpected argument \"false\"")
      assert.include(yield* refusalOf(["--listen"]), "--listen: needs a value")
      assert.include(yield* refusalOf(["--listen", "--grace-period", "5s"]), "--listen: needs a value")
      assert.include(yield* refusalOf(["--grace-period", "1s", "--grace-period=2s"]), "--grace-period: given more than once")
      assert.include(yield* refusalOf(["--help=yes"]), "--help takes no value")
    }))

  it.effect("refuses unknown PYRYCODE_RELAY_* variables, so a typo cannot pass silently", () =>
    Effect.gen(function*() {
      assert.include(yield* refusalOf([], { PYRYCODE_RELAY_PRODUCTON: "1" }), "PYRYCODE_RELAY_PRODUCTON: unknown variable")
      // Other variables are none of our business.
      yield* configOf([], { PATH: "/usr/bin", PYRYCODE_TOKEN: "x" })
    }))

  it.effect("--tls-cert and --tls-key come together or not at all", () =>
    Effect.gen(function*() {
      // The missing one is named by its flag: the operator typed flags, and SPEC §9 says
      // "--tls-cert without --tls-key" (the old line named the variable of a setting never given).
      assert.strictEqual(yield* refusalOf(["--tls-cert", "c.pem"]), "--tls-cert is set without --tls-key (give both or neither)")
      assert.strictEqual(yield* refusalOf(["--tls-key", "k.pem"]), "--tls-key is set without --tls-cert (give both or neither)")
      assert.strictEqual(
        yield* refusalOf([], { PYRYCODE_RELAY_TLS_KEY: "k.pem" }),
        "PYRYCODE_RELAY_TLS_KEY is set without --tls-cert (give both or neither)"
      )
      const c = yield* configOf(["--tls-cert", "c.pem"], { PYRYCODE_RELAY_TLS_KEY: "k.pem" })
      assert.deepStrictEqual(c.tls, { certFile: "c.pem", keyFile: "k.pem" })
    }))

  it.effect("refuses buffer bounds that could never hold one full-size frame", () =>
    Effect.gen(function*() {
      assert.strictEqual(
        yield* refusalOf(["--max-frame-bytes", "1MiB", "--phone-outbox-bytes", "512KiB"]),
        "--phone-outbox-bytes: 524288 is smaller than --max-frame-bytes 1048576 + 64 (the cost of one item), so a full-size frame could never be queued"
      )
      // Each item costs its frame + 64 (SPEC §4.3): an outbox of exactly the frame limit cannot
      // take one full-size frame, so it is refused too; one of frame + 64 can.
      assert.include(
        yield* refusalOf(["--max-frame-bytes", "1MiB", "--phone-outbox-bytes", "1MiB"]),
        "--phone-outbox-bytes: 1048576 is smaller than --max-frame-bytes 1048576 + 64"
      )
      assert.strictEqual(
        (yield* configOf(["--max-frame-bytes", "1MiB", "--phone-outbox-bytes", "1048640"])).phoneOutboxBytes,
        1_048_640
      )
      assert.strictEqual(
        yield* refusalOf(["--max-buffered-bytes", "1MiB"]),
        "--max-buffered-bytes: 1048576 is smaller than --phone-outbox-bytes 4194304, so no outbox could ever fill"
      )
    }))

  describe("PYRYCODE_RELAY_PRODUCTION", () => {
    const listen = ["--listen", "0.0.0.0:8080"]

    it.effect("=1 with an explicit --listen and a non-root user runs in production", () =>
      Effect.gen(function*() {
        assert.isTrue((yield* configOf(listen, { PYRYCODE_RELAY_PRODUCTION: "1" })).production)
        assert.isTrue((yield* configOf([], { PYRYCODE_RELAY_PRODUCTION: "1", PYRYCODE_RELAY_LISTEN: "0.0.0.0:8080" })).production)
        // An explicit address equal to the default is still explicit.
        yield* configOf(["--listen", "127.0.0.1:8080"], { PYRYCODE_RELAY_PRODUCTION: "1" })
        // Unknown uid (platform without getuid) is not root.
        yield* configOf(listen, { PYRYCODE_RELAY_PRODUCTION: "1" }, undefined)
      }))

    it.effect("=1 refuses root", () =>
      Effect.gen(function*() {
        assert.include(yield* refusalOf(listen, { PYRYCODE_RELAY_PRODUCTION: "1" }, 0), "PYRYCODE_RELAY_PRODUCTION=1: refusing to run as root")
        // Root is fine outside production.
        yield* configOf(listen, {}, 0)
      }))

    it.effect("=1 refuses effective capabilities other than CAP_NET_BIND_SERVICE, naming them", () =>
      Effect.gen(function*() {
        const capEff = (hex: string) => () => Result.succeed(`Name:\tnode\nCapInh:\t0000000000000000\nCapEff:\t${hex}\n`)
        const production = { PYRYCODE_RELAY_PRODUCTION: "1" }
        // Exactly CAP_NET_BIND_SERVICE (bit 10), or nothing: runs.
        assert.isTrue((yield* configOf(listen, production, NON_ROOT, capEff("0000000000000400"))).production)
        assert.isTrue((yield* configOf(listen, production, NON_ROOT, capEff("0000000000000000"))).production)
        // CAP_NET_BIND_SERVICE + CAP_NET_RAW (13) + CAP_SYS_ADMIN (21).
        const message = yield* refusalOf(listen, production, NON_ROOT, capEff("0000000000202400"))
        assert.strictEqual(
          message,
          "PYRYCODE_RELAY_PRODUCTION=1: the effective capability set holds CAP_NET_RAW, CAP_SYS_ADMIN (only CAP_NET_BIND_SERVICE is allowed)"
        )
        // Unreadable, or no CapEff line: refused too.
        assert.include(
          yield* refusalOf(listen, production, NON_ROOT, () => Result.fail("ENOENT")),
          "PYRYCODE_RELAY_PRODUCTION=1: cannot read the effective capability set from /proc/self/status (ENOENT)"
        )
        assert.include(yield* refusalOf(listen, production, NON_ROOT, () => Result.succeed("Name:\tnode\n")), "no CapEff line")
        // Outside production the file is never read.
        yield* configOf(listen, {}, NON_ROOT, () => {
          throw new Error("read outside production")
        })
      }))

    it.effect("=1 refuses the built-in default --listen", () =>
      Effect.gen(function*() {
        assert.include(yield* refusalOf([], { PYRYCODE_RELAY_PRODUCTION: "1" }), "--listen (or PYRYCODE_RELAY_LISTEN) must be given explicitly")
      }))

    it.effect("any value other than exactly 1 is refused, naming the variable without echoing the value", () =>
      Effect.gen(function*() {
        for (const value of ["true", "0", " 1", "1 ", "", "yes", "01"]) {
          const message = yield* refusalOf(listen, { PYRYCODE_RELAY_PRODUCTION: value })
          assert.strictEqual(message, "PYRYCODE_RELAY_PRODUCTION: must be unset or exactly 1", JSON.stringify(value))
        }
      }))
  })
})

describe("usage and version", () => {
  it("usage lists every flag with its default, and the variable naming rule", () => {
    for (const f of flags) {
      const line = usage.split("\n").find((l) => l.startsWith(`  --${f.name} `) || l.trimEnd() === `  --${f.name}`)
      assert.isDefined(line, f.name)
      assert.include(line, `(default ${f.default})`, f.name)
    }
    assert.include(usage, "--help")
    assert.include(usage, "--version")
    assert.include(usage, "PYRYCODE_RELAY_<FLAG>")
    assert.include(usage, "PYRYCODE_RELAY_PRODUCTION")
  })

  it("version is package.json's", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
    assert.strictEqual(version, pkg.version)
    assert.match(version, /^\d+\.\d+\.\d+/)
  })
})

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
