/**
 * Runs the relay as a real process (`node dist/service/relay.mjs <flags>`: the bundle `npm start`
 * runs, built from the current sources by the test run's global setup), as a user would, on a
 * free loopback port. Tests talk to it only over sockets.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as Net from "node:net"
import * as Path from "node:path"

const ROOT = Path.resolve(import.meta.dirname, "../..")
const NODE = Path.join(ROOT, "node_modules/.bin/node")
/** The service entry `npm start` runs (see `test/support/BuildService.ts`). */
export const RELAY_ENTRY = "dist/service/relay.mjs"

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resolve(port))
    })
  })

export interface RelayProcess {
  readonly port: number
  readonly metricsPort: number
  readonly url: string
  readonly httpUrl: string
  readonly metricsUrl: string
  readonly child: ChildProcess
  /** Every stderr line so far. */
  readonly logs: Array<string>
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>
  readonly stop: (signal?: NodeJS.Signals) => Promise<number | null>
}

export interface RunOptions {
  readonly env?: Readonly<Record<string, string>>
  readonly tls?: boolean
  /** The flag the public port is given with: `--https-listen` in ACME mode (where `--listen` is refused). */
  readonly listenFlag?: "--listen" | "--https-listen"
}

/** Runs the relay with these arguments; resolves when it exits. */
export const runCli = (
  args: ReadonlyArray<string>,
  env: Readonly<Record<string, string>> = {}
): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve) => {
    const child = spawn(NODE, [RELAY_ENTRY, ...args], { cwd: ROOT, env: { ...cleanEnv(), ...env } })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()))
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
  })

/** The environment without any PYRYCODE_RELAY_* variable of the machine running the tests. */
const cleanEnv = (): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !key.startsWith("PYRYCODE_RELAY_")) env[key] = value
  }
  return env
}

/**
 * Set by a test file that runs other files' cases in cluster mode (`cluster-same-node.test.ts`):
 * then every relay this test process starts is a one-node cluster on that Redis, under a key
 * prefix of its own, so relays of different files never share a server-id.
 */
export const CLUSTER_REDIS_FOR_TESTS = "PYRYCODE_TEST_CLUSTER_REDIS"
export const clusterRedisForTests = (): string | undefined => process.env[CLUSTER_REDIS_FOR_TESTS]

/**
 * Starts a relay on ports free a moment ago. Another process on the machine (a parallel test
 * file's Redis or relay, a benchmark) can take one in between: the start is tried again on fresh
 * ports, up to three times, when — and only when — the relay said a port was in use.
 */
export const startRelay = async (flags: ReadonlyArray<string> = [], options: RunOptions = {}): Promise<RelayProcess> => {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startRelayOnce(flags, options)
    } catch (e) {
      if (attempt >= 3 || !(e instanceof Error && e.message.includes("EADDRINUSE"))) throw e
    }
  }
}

const startRelayOnce = async (flags: ReadonlyArray<string>, options: RunOptions): Promise<RelayProcess> => {
  const port = await freePort()
  // Two probes in a row may be handed the same free port.
  let metricsPort = await freePort()
  while (metricsPort === port) metricsPort = await freePort()
  // Every test client dials from 127.0.0.1: tests that are not about the rate limit turn it off.
  const rateLimit = flags.includes("--rate-limit-burst") ? [] : ["--rate-limit-burst", "0"]
  const clusterUrl = clusterRedisForTests()
  const cluster = clusterUrl === undefined || flags.includes("--cluster-redis")
    ? []
    : ["--cluster-redis", clusterUrl, "--cluster-prefix", `test-${port}`]
  const child = spawn(
    NODE,
    [
      RELAY_ENTRY,
      options.listenFlag ?? "--listen",
      `127.0.0.1:${port}`,
      "--metrics-listen",
      `127.0.0.1:${metricsPort}`,
      ...rateLimit,
      ...cluster,
      ...flags
    ],
    { cwd: ROOT, env: { ...cleanEnv(), ...options.env }, stdio: ["ignore", "pipe", "pipe"] }
  )
  const logs: Array<string> = []
  let partial = ""
  child.stderr!.on("data", (d: Buffer) => {
    const parts = (partial + d.toString()).split("\n")
    partial = parts.pop() ?? ""
    logs.push(...parts)
  })
  child.stdout!.resume()
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
  const started = await Promise.race([
    (async () => {
      for (let i = 0; i < 800; i++) {
        if (logs.some((l) => l.includes("relay started"))) return true
        await new Promise((r) => setTimeout(r, 25))
      }
      return false
    })(),
    exited.then(() => false)
  ])
  if (!started) {
    child.kill("SIGKILL")
    throw new Error(`relay did not start:\n${logs.join("\n")}`)
  }
  const scheme = options.tls ? "wss" : "ws"
  const httpScheme = options.tls ? "https" : "http"
  return {
    port,
    metricsPort,
    url: `${scheme}://127.0.0.1:${port}`,
    httpUrl: `${httpScheme}://127.0.0.1:${port}`,
    metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`,
    child,
    logs,
    exited,
    stop: (signal: NodeJS.Signals = "SIGTERM") => {
      if (child.exitCode !== null) return exited
      child.kill(signal)
      return exited
    }
  }
}

/**
 * `startRelay` that remembers the process, for files whose failing tests must not leave a relay
 * running: call `killTracked` from `afterEach`.
 */
const tracked: Array<RelayProcess> = []
export const startTrackedRelay = async (...args: Parameters<typeof startRelay>): Promise<RelayProcess> => {
  const relay = await startRelay(...args)
  tracked.push(relay)
  return relay
}
export const killTracked = (): void => {
  for (const relay of tracked.splice(0)) {
    if (relay.child.exitCode === null && relay.child.signalCode === null) relay.child.kill("SIGKILL")
  }
}
