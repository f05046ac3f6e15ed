import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import { loadRelayConfig, parseArgs } from "../../src/config/Cli.ts"
import type { RelayConfigShape } from "../../src/config/RelayConfig.ts"
import { configOf, NON_ROOT, refusalOf } from "../support/ConfigRun.ts"
import { plain, SPEC_DEFAULTS } from "../support/SpecDefaults.ts"

const ms = (d: Duration.Duration) => Duration.toMillis(d)

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
  it.effect("with nothing given has SPEC §9's defaults, as the spec writes them", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(plain(yield* configOf([])), SPEC_DEFAULTS)
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
        pushMaxInFlight: 4,
        cluster: undefined
      }
      assert.deepStrictEqual(plain(c), plain(expected))
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
        // What was typed is quoted as typed, even when it looks like a setting's placeholder.
        assert.strictEqual(yield* refusalOf([...d, "--acme-directory", "{listen}"]), "--acme-directory: \"{listen}\" is not a URL")
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
