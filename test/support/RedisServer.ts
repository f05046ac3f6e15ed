/**
 * A real `redis-server` (Debian package `redis-server`) started by a test on a free loopback
 * port, with no persistence: a restart is an empty Redis, as CLUSTER.md §8 asks to survive. Tests
 * that need it skip, with one loud line, when it is not installed.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import * as Net from "node:net"
import { afterAll, beforeAll } from "vitest"
import { freePort } from "./RelayProcess.ts"

/** The redis-server binary on PATH or where Debian puts it, or undefined. */
export const redisServerBinary: string | undefined = ["redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server"].find(
  (candidate) => spawnSync(candidate, ["--version"], { stdio: "ignore" }).status === 0
)

/** The one line a test file prints when it skips for want of redis-server. */
export const warnIfNoRedis = (file: string): void => {
  if (redisServerBinary === undefined) {
    console.warn(`${file}: SKIPPED — \`redis-server\` not found on PATH or in /usr/bin (install the Debian package \`redis-server\`)`)
  }
}

export interface RedisServer {
  readonly port: number
  /** `redis://127.0.0.1:<port>` (with `user:password@` when started with a password). */
  readonly url: string
  /** One command over a fresh connection (RESP), the reply as text lines. */
  readonly command: (...args: ReadonlyArray<string>) => Promise<string>
  /** SIGSTOP / SIGCONT: Redis stalls with its socket open, then resumes. */
  readonly pause: () => void
  readonly resume: () => void
  /** Stops the process (SIGKILL, nothing saved), then starts an empty one on the same port. */
  readonly restartEmpty: () => Promise<void>
  /** Stops the process; `start` brings an empty one back on the same port. */
  readonly kill: () => Promise<void>
  readonly start: () => Promise<void>
  readonly stop: () => Promise<void>
}

const encode = (args: ReadonlyArray<string>): string =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`

/** Sends one command and collects the reply until it is complete (a short pause ends it). */
const sendCommand = (port: number, password: string | undefined, args: ReadonlyArray<string>): Promise<string> =>
  new Promise((resolve, reject) => {
    const socket = Net.connect({ host: "127.0.0.1", port })
    let reply = ""
    let timer: NodeJS.Timeout | undefined
    socket.on("data", (d: Buffer) => {
      reply += d.toString()
      clearTimeout(timer)
      timer = setTimeout(() => socket.end(), 30)
    })
    socket.once("connect", () => socket.write((password === undefined ? "" : encode(["AUTH", password])) + encode(args)))
    socket.once("close", () => resolve(password === undefined ? reply : reply.replace(/^\+OK\r\n/, "")))
    socket.once("error", reject)
  })

const waitUntilServing = async (port: number, password: string | undefined, child: ChildProcess): Promise<void> => {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`redis-server exited ${child.exitCode}`)
    const pong = await sendCommand(port, password, ["PING"]).catch(() => "")
    if (pong.startsWith("+PONG")) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`redis-server did not answer on ${port}`)
}

export const startRedis = async (options: { readonly password?: string } = {}): Promise<RedisServer> => {
  if (redisServerBinary === undefined) throw new Error("redis-server is not installed")
  const port = await freePort()
  const password = options.password
  let child: ChildProcess | undefined
  const start = async () => {
    const args = ["--port", `${port}`, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    if (password !== undefined) args.push("--requirepass", password)
    child = spawn(redisServerBinary!, args, { stdio: ["ignore", "ignore", "ignore"] })
    await waitUntilServing(port, password, child)
  }
  const kill = async () => {
    const c = child
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return
    const exited = new Promise((r) => c.once("exit", r))
    c.kill("SIGCONT")
    c.kill("SIGKILL")
    await exited
  }
  await start()
  return {
    port,
    url: password === undefined ? `redis://127.0.0.1:${port}` : `redis://default:${password}@127.0.0.1:${port}`,
    command: (...args) => sendCommand(port, password, args),
    pause: () => child?.kill("SIGSTOP"),
    resume: () => child?.kill("SIGCONT"),
    restartEmpty: async () => {
      await kill()
      await start()
    },
    kill,
    start,
    stop: kill
  }
}

/**
 * A `redis-server` for the calling `describe` block: started before its first test, stopped after
 * its last. Call the returned function inside tests and hooks for the running server.
 */
export const redisForSuite = (options: { readonly password?: string } = {}): (() => RedisServer) => {
  let redis: RedisServer | undefined
  beforeAll(async () => {
    redis = await startRedis(options)
  })
  afterAll(async () => {
    await redis?.stop()
  })
  return () => {
    if (redis === undefined) throw new Error("redis-server is not running (used outside the suite's tests?)")
    return redis
  }
}
