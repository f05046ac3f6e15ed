/**
 * The command line as an operator meets it (SPEC §9, §10): boot refusals exit 2 with one line
 * naming the culprit, a listener that cannot bind exits 1, `--help`/`--version` exit 0, and a
 * flag wins over its `PYRYCODE_RELAY_*` variable, which wins over the default.
 */
import { readFileSync } from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, runCli, startRelay } from "../support/RelayProcess.ts"
import { dialBinary, dialPhone } from "../support/Peers.ts"

const ROOT = Path.resolve(import.meta.dirname, "../..")
const pkg = JSON.parse(readFileSync(Path.join(ROOT, "package.json"), "utf8")) as { version: string }

/** Every flag of SPEC §9 (plus `--close-timeout`, which the relay adds). */
const FLAGS = [
  "listen",
  "tls-cert",
  "tls-key",
  "domain",
  "acme-directory",
  "acme-email",
  "acme-ca-file",
  "cert-cache",
  "https-listen",
  "http-listen",
  "metrics-listen",
  "max-connections",
  "max-connections-per-ip",
  "trust-x-forwarded-for",
  "proxy-protocol",
  "grace-period",
  "heartbeat-interval",
  "heartbeat-timeout",
  "probe-timeout",
  "write-timeout",
  "message-timeout",
  "handshake-timeout",
  "close-timeout",
  "max-frame-bytes",
  "max-phones-per-server",
  "phone-outbox-bytes",
  "max-buffered-bytes",
  "rate-limit-burst",
  "rate-limit-refill",
  "drain-timeout",
  "log-format",
  "log-level",
  // PUSH.md §1
  "fcm-credentials-file",
  "fcm-project-id",
  "fcm-endpoint",
  "push-burst",
  "push-refill",
  "push-max-in-flight",
  // CLUSTER.md §1
  "cluster-redis",
  "node-id",
  "cluster-prefix",
  "lease-ttl",
  "version",
  "help"
]

/** Ports that are free now: a refusal must exit before binding, and a mistake must not hit 8080. */
let listen: Array<string>
beforeAll(async () => {
  listen = ["--listen", `127.0.0.1:${await freePort()}`, "--metrics-listen", `127.0.0.1:${await freePort()}`]
})

const isRoot = process.getuid?.() === 0

/** A refusal: exit 2, nothing on stdout, exactly one stderr line, naming `culprit`. */
const expectRefusal = (
  result: { code: number | null; stdout: string; stderr: string },
  culprit: string
): string => {
  expect(result.code, result.stderr).toBe(2)
  expect(result.stdout).toBe("")
  const lines = result.stderr.split("\n").filter((l) => l.length > 0)
  expect(lines, result.stderr).toHaveLength(1)
  expect(lines[0]).toContain(culprit)
  // Refused before the logger existed: no `relay started`, nothing bound.
  expect(result.stderr).not.toContain("relay started")
  return lines[0]!
}

describe("boot refusals exit 2 and name the culprit", () => {
  const cases: ReadonlyArray<{ name: string; args: ReadonlyArray<string>; culprit: string }> = [
    { name: "unknown flag", args: ["--bogus-flag", "1"], culprit: "--bogus-flag" },
    { name: "bad duration", args: ["--grace-period", "5x"], culprit: "--grace-period" },
    { name: "negative duration", args: ["--drain-timeout", "-1s"], culprit: "--drain-timeout" },
    { name: "bad size", args: ["--max-frame-bytes", "12GB"], culprit: "--max-frame-bytes" },
    { name: "non-loopback metrics address", args: ["--metrics-listen", "0.0.0.0:9090"], culprit: "--metrics-listen" },
    { name: "port 0", args: ["--listen", "127.0.0.1:0"], culprit: "--listen" },
    { name: "port 70000", args: ["--listen", "127.0.0.1:70000"], culprit: "--listen" },
    { name: "--tls-cert without --tls-key", args: ["--tls-cert", "/nonexistent/cert.pem"], culprit: "--tls-cert" },
    { name: "--max-connections 0", args: ["--max-connections", "0"], culprit: "--max-connections" },
    { name: "bad --log-format", args: ["--log-format", "xml"], culprit: "--log-format" },
    {
      name: "an outbox that cannot hold one full-size frame",
      args: ["--max-frame-bytes", "1MiB", "--phone-outbox-bytes", "1MiB"],
      culprit: "--phone-outbox-bytes"
    },
    { name: "--proxy-protocol with --trust-x-forwarded-for", args: ["--proxy-protocol", "--trust-x-forwarded-for"], culprit: "--proxy-protocol" }
  ]
  for (const c of cases) {
    it(c.name, async () => {
      // The explicit, valid --listen/--metrics-listen come first; a repeated flag is refused
      // too, so cases about those flags replace them.
      const base = c.args[0] === "--listen"
        ? listen.slice(2)
        : c.args[0] === "--metrics-listen"
        ? listen.slice(0, 2)
        : listen
      expectRefusal(await runCli([...base, ...c.args]), c.culprit)
    })
  }

  it("--tls-key without --tls-cert names --tls-key", async () => {
    expectRefusal(await runCli([...listen, "--tls-key", "/nonexistent/key.pem"]), "--tls-key")
  })

  it("the metrics listener on the public listener's address is refused before either binds", async () => {
    const same = listen[1]!
    const line = expectRefusal(await runCli(["--listen", same, "--metrics-listen", same]), "--metrics-listen")
    expect(line).toBe("pyrycode-relay: --metrics-listen and --listen are the same address")
  })

  it("a bad variable is named by its variable name", async () => {
    expectRefusal(await runCli(listen, { PYRYCODE_RELAY_GRACE_PERIOD: "soon" }), "PYRYCODE_RELAY_GRACE_PERIOD")
  })

  // The refusal never echoes the value: it is the same line whatever was given.
  const productionLines = new Map<string, string>()
  for (const value of ["true", "0", " 1", "", "yes-SECRETISH-VALUE"]) {
    it(`PYRYCODE_RELAY_PRODUCTION=${JSON.stringify(value)} is refused without echoing the value`, async () => {
      const line = expectRefusal(
        await runCli(listen, { PYRYCODE_RELAY_PRODUCTION: value }),
        "PYRYCODE_RELAY_PRODUCTION"
      )
      expect(line).not.toContain("SECRETISH")
      expect(line).not.toContain(JSON.stringify(value))
      for (const other of productionLines.values()) expect(line).toBe(other)
      productionLines.set(value, line)
    })
  }

  it("production on the built-in default --listen is refused", async () => {
    // Checked before the root check, so this runs as whoever runs the tests (running as another
    // user would need the checkout to be readable by them, which a CI clone need not be).
    const line = expectRefusal(await runCli([], { PYRYCODE_RELAY_PRODUCTION: "1" }), "PYRYCODE_RELAY_PRODUCTION")
    expect(line).toContain("--listen")
  })

  it.runIf(isRoot)("production as root is refused", async () => {
    const line = expectRefusal(
      await runCli(listen, { PYRYCODE_RELAY_PRODUCTION: "1" }),
      "PYRYCODE_RELAY_PRODUCTION"
    )
    expect(line).toContain("root")
  })

  it.runIf(!isRoot)("production with an explicit --listen as a normal user starts", async () => {
    const relay = await startRelay([], { env: { PYRYCODE_RELAY_PRODUCTION: "1" } })
    expect(await relay.stop()).toBe(0)
  })
})

describe("bind failures exit 1", () => {
  let occupier: Net.Server
  let busy: number
  beforeAll(async () => {
    occupier = Net.createServer()
    await new Promise<void>((resolve) => occupier.listen(0, "127.0.0.1", resolve))
    busy = (occupier.address() as Net.AddressInfo).port
  })
  afterAll(async () => {
    await new Promise<void>((resolve) => occupier.close(() => resolve()))
  })

  it("the public listener's port is taken", async () => {
    const result = await runCli(["--listen", `127.0.0.1:${busy}`, "--metrics-listen", ""])
    expect(result.code, result.stderr).toBe(1)
    const last = result.stderr.trimEnd().split("\n").at(-1)!
    expect(last).toContain(`127.0.0.1:${busy}`)
    expect(last).toMatch(/EADDRINUSE|in use/)
    expect(result.stderr).not.toContain("relay started")
  })

  it("the metrics listener's port is taken", async () => {
    const result = await runCli(["--listen", `127.0.0.1:${await freePort()}`, "--metrics-listen", `127.0.0.1:${busy}`])
    expect(result.code, result.stderr).toBe(1)
    const last = result.stderr.trimEnd().split("\n").at(-1)!
    expect(last).toContain("metrics")
    expect(last).toContain(`127.0.0.1:${busy}`)
    expect(result.stderr).not.toContain("relay started")
  })
})

describe("--help and --version", () => {
  it("--help exits 0 and lists every flag", async () => {
    const result = await runCli(["--help"])
    expect(result.code).toBe(0)
    for (const flag of FLAGS) expect(result.stdout).toContain(`--${flag}`)
    expect(result.stdout).toContain("PYRYCODE_RELAY_PRODUCTION")
    // Defaults as SPEC §9 writes them (the full list is pinned in test/unit/config-help.test.ts).
    expect(result.stdout).toMatch(/--grace-period <value> .*\(default 30s\)\n/)
    expect(result.stdout).toMatch(/--phone-outbox-bytes <value> .*\(default 4194304\)\n/)
    expect(result.stderr).toBe("")
  })

  it("-h works too, even next to a broken flag", async () => {
    const result = await runCli(["--bogus", "-h"])
    expect(result.code).toBe(0)
    expect(result.stdout).toContain("--listen")
  })

  it("--version exits 0 and prints package.json's version", async () => {
    const result = await runCli(["--version"])
    expect(result.code).toBe(0)
    expect(result.stdout.trim()).toBe(pkg.version)
  })
})

describe("environment and flag precedence", () => {
  interface Started {
    readonly event: string
    readonly limits: Record<string, unknown>
  }
  const startedLine = (logs: ReadonlyArray<string>): Started =>
    JSON.parse(logs.find((l) => l.includes(`"relay started"`))!) as Started

  it("uses the variable when the flag is absent", async () => {
    const relay = await startRelay([], { env: { PYRYCODE_RELAY_MAX_PHONES_PER_SERVER: "1" } })
    try {
      expect(startedLine(relay.logs).limits.max_phones_per_server).toBe(1)
      const binary = await dialBinary(relay.url, "env-1")
      const first = await dialPhone(relay.url, "env-1")
      const second = await dialPhone(relay.url, "env-1")
      expect(await second.closed).toEqual({ code: 4429, reason: "too many phones for server-id" })
      expect(first.ws.readyState).toBe(first.ws.OPEN)
      first.ws.close()
      binary.ws.close()
    } finally {
      expect(await relay.stop()).toBe(0)
    }
  })

  it("the flag wins over the variable", async () => {
    const relay = await startRelay(["--max-phones-per-server", "2"], {
      env: { PYRYCODE_RELAY_MAX_PHONES_PER_SERVER: "1" }
    })
    try {
      expect(startedLine(relay.logs).limits.max_phones_per_server).toBe(2)
      const binary = await dialBinary(relay.url, "env-2")
      const phones = [await dialPhone(relay.url, "env-2"), await dialPhone(relay.url, "env-2")]
      const third = await dialPhone(relay.url, "env-2")
      expect(await third.closed).toEqual({ code: 4429, reason: "too many phones for server-id" })
      for (const p of phones) expect(p.ws.readyState).toBe(p.ws.OPEN)
      for (const p of phones) p.ws.close()
      binary.ws.close()
    } finally {
      expect(await relay.stop()).toBe(0)
    }
  })

  it("a flag shadows its variable entirely, even a malformed one", async () => {
    const relay = await startRelay(["--grace-period", "2s"], { env: { PYRYCODE_RELAY_GRACE_PERIOD: "junk" } })
    try {
      expect(startedLine(relay.logs).limits.grace_period).toBe("2s")
    } finally {
      expect(await relay.stop()).toBe(0)
    }
  })

  it("--log-format pretty from the variable switches away from JSON lines", async () => {
    const relay = await startRelay([], { env: { PYRYCODE_RELAY_LOG_FORMAT: "pretty" } })
    try {
      const line = relay.logs.find((l) => l.includes("relay started"))!
      expect(() => JSON.parse(line)).toThrow()
      expect(line).toMatch(/INFO\s+relay started/)
    } finally {
      expect(await relay.stop()).toBe(0)
    }
  })
})
