/** Process helpers for the bench: free ports, spawning servers, waiting for a port, stopping. */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"

export const HOST = "127.0.0.1"
export const REPO_ROOT = path.resolve(import.meta.dirname, "..", "..")
export const NODE = process.execPath

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/**
 * The V8 flags `npm start` gives the relay and the entry it runs (`exec node <flags> <entry>` at
 * the end of package.json's start script), so every bench runs the relay as it is deployed. Read,
 * not copied: no drift.
 */
const startCommand = (() => {
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as { scripts: { start: string } }
  const m = /\bexec node((?:\s+--[^\s]+)*)\s+(\S+\.m?[jt]s)$/.exec(pkg.scripts.start)
  if (m === null) throw new Error(`package.json start script not understood: ${pkg.scripts.start}`)
  return { flags: m[1]!.trim().split(/\s+/).filter((f) => f !== ""), entry: m[2]! }
})()
export const RELAY_NODE_FLAGS: ReadonlyArray<string> = startCommand.flags
/** The file `npm start` runs: the service bundle. */
export const RELAY_ENTRY: string = startCommand.entry

/** Builds the service bundle from the current sources, as `npm start` does before it runs it. */
export const buildService = (root: string = REPO_ROOT): void => {
  execFileSync("npm", ["run", "--silent", "build:service"], { cwd: root, stdio: "inherit" })
}

/** A port the OS considers free right now on 127.0.0.1. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once("error", reject)
    srv.listen(0, HOST, () => {
      const addr = srv.address()
      const port = typeof addr === "object" && addr !== null ? addr.port : 0
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error("no port"))))
    })
  })

/** Split a command line on whitespace, honouring '…' and "…" quoting (no escapes, no globbing). */
export const splitCommand = (cmd: string): Array<string> => {
  const out: Array<string> = []
  let word: string | undefined
  let quote = ""
  for (const ch of cmd) {
    if (quote !== "") {
      if (ch === quote) quote = ""
      else word += ch
    } else if (ch === "'" || ch === '"') {
      quote = ch
      word ??= ""
    } else if (/\s/.test(ch)) {
      if (word !== undefined) out.push(word)
      word = undefined
    } else {
      word = (word ?? "") + ch
    }
  }
  if (quote !== "") throw new Error(`unbalanced quote in command: ${cmd}`)
  if (word !== undefined) out.push(word)
  return out
}

/** True once a TCP connection to the port succeeds. */
const canConnect = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.connect({ host: HOST, port })
    s.once("connect", () => {
      s.destroy()
      resolve(true)
    })
    s.once("error", () => resolve(false))
    s.setTimeout(1000, () => {
      s.destroy()
      resolve(false)
    })
  })

export interface Server {
  readonly child: ChildProcess
  readonly port: number
  readonly logFile: string
  exited: boolean
}

/** Spawn `argv` (cwd = repo root, output to `logFile`) and wait until `port` accepts TCP. */
export const startServer = async (
  argv: ReadonlyArray<string>,
  port: number,
  logFile: string,
  timeoutMs = 30_000
): Promise<Server> => {
  const [cmd, ...rest] = argv
  if (cmd === undefined) throw new Error("empty server command")
  fs.mkdirSync(path.dirname(logFile), { recursive: true })
  const fd = fs.openSync(logFile, "w")
  const child = spawn(cmd, rest, { cwd: REPO_ROOT, stdio: ["ignore", fd, fd] })
  fs.closeSync(fd)
  const server: Server = { child, port, logFile, exited: false }
  child.once("exit", () => {
    server.exited = true
  })
  child.once("error", () => {
    server.exited = true
  })
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (server.exited) throw new Error(`server exited before listening: ${argv.join(" ")} (log: ${logFile})`)
    if (await canConnect(port)) return server
    await sleep(50)
  }
  await stopServer(server)
  throw new Error(`server did not listen on ${port} within ${timeoutMs} ms (log: ${logFile})`)
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
export const stopServer = async (server: Server, graceMs = 15_000): Promise<void> => {
  if (server.exited) return
  const exited = new Promise<void>((r) => server.child.once("exit", () => r()))
  server.child.kill("SIGTERM")
  const timer = setTimeout(() => server.child.kill("SIGKILL"), graceMs)
  await exited
  clearTimeout(timer)
}

export interface RunResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Run a bench script with this Node and collect its output. */
export const runNodeScript = (script: string, args: ReadonlyArray<string>, timeoutMs: number): Promise<RunResult> =>
  new Promise((resolve) => {
    const child = spawn(NODE, [path.join(REPO_ROOT, script), ...args], {
      cwd: REPO_ROOT,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
    child.once("close", (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? 1, stdout, stderr })
    })
  })

/**
 * CPU time (user + system, all threads) a process has used so far, in ms, from /proc (Linux only;
 * NaN elsewhere). Assumes the usual 100 clock ticks per second.
 */
export const cpuMs = (pid: number | undefined): number => {
  if (pid === undefined) return Number.NaN
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return (Number(fields[11]) + Number(fields[12])) * 10
  } catch {
    return Number.NaN
  }
}
