/**
 * HAProxy (Debian package `haproxy`) started by a test on loopback, in TCP mode with
 * `send-proxy-v2` towards the relay: the load balancer EDGE.md §3 is about.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { freePort } from "./RelayProcess.ts"

/** The haproxy binary on PATH or in /usr/sbin (where Debian puts it), or undefined. */
export const haproxyBinary: string | undefined = ["haproxy", "/usr/sbin/haproxy", "/usr/local/sbin/haproxy"].find((candidate) =>
  spawnSync(candidate, ["-v"], { stdio: "ignore" }).status === 0
)

export interface HaProxy {
  readonly port: number
  readonly output: () => string
  readonly stop: () => Promise<void>
}

/**
 * Waits until a whole request through HAProxy is answered. A bare connect-and-close probe would
 * make HAProxy open (and drop) a backend connection without a complete exchange, which the relay
 * may count as a refused PROXY connection.
 */
const waitUntilServing = async (port: number, child: ChildProcess, output: () => string): Promise<void> => {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`haproxy exited ${child.exitCode}:\n${output()}`)
    const answered = await new Promise<boolean>((resolve) => {
      const socket = Net.connect({ host: "127.0.0.1", port })
      let text = ""
      socket.on("data", (d: Buffer) => (text += d.toString()))
      socket.once("connect", () => socket.write("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
      socket.once("close", () => resolve(text.startsWith("HTTP/1.1 200")))
      socket.once("error", () => {})
    })
    if (answered) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`haproxy did not serve on ${port}:\n${output()}`)
}

/**
 * HAProxy listening on a free loopback port, forwarding every connection to `backendPort` (a
 * relay answering `/healthz` in plain HTTP), resolved once a request through it was answered.
 */
export const startHaProxy = async (backendPort: number): Promise<HaProxy> =>
  runHaProxy((port) => [
    "defaults",
    "    mode tcp",
    "    timeout connect 5s",
    "    timeout client 1m",
    "    timeout server 1m",
    "frontend relay_in",
    `    bind 127.0.0.1:${port}`,
    "    default_backend relay",
    "backend relay",
    `    server relay1 127.0.0.1:${backendPort} send-proxy-v2`
  ])

/**
 * HAProxy in HTTP mode in front of several relays, checking each one's `/readyz`, with the given
 * balancing lines.
 */
const balancedHttp = (backendPorts: ReadonlyArray<number>, balance: ReadonlyArray<string>): Promise<HaProxy> =>
  runHaProxy((port) => [
    "defaults",
    "    mode http",
    "    timeout connect 5s",
    "    timeout client 1m",
    "    timeout server 1m",
    "    timeout tunnel 1h",
    "frontend relay_in",
    `    bind 127.0.0.1:${port}`,
    "    default_backend relay",
    "backend relay",
    ...balance,
    "    option httpchk GET /readyz",
    "    http-check expect status 200",
    ...backendPorts.map((p, i) => `    server relay${i} 127.0.0.1:${p} check inter 500ms fall 2 rise 1`)
  ])

/** Balancing on `X-Pyrycode-Server` with consistent hashing: the configuration docs/cluster.md gives. */
export const startHaProxyByServerId = (backendPorts: ReadonlyArray<number>): Promise<HaProxy> =>
  balancedHttp(backendPorts, ["    balance hdr(X-Pyrycode-Server)", "    hash-type consistent"])

/** Round-robin: a binary and its phones land on whichever node comes next (CLUSTER.md §5). */
export const startHaProxyRoundRobin = (backendPorts: ReadonlyArray<number>): Promise<HaProxy> =>
  balancedHttp(backendPorts, ["    balance roundrobin"])

const runHaProxy = async (lines: (port: number) => ReadonlyArray<string>): Promise<HaProxy> => {
  if (haproxyBinary === undefined) throw new Error("haproxy is not installed")
  const port = await freePort()
  const dir = mkdtempSync(Path.join(Os.tmpdir(), "relay-haproxy-"))
  const config = Path.join(dir, "haproxy.cfg")
  writeFileSync(config, ["global", "    maxconn 512", ...lines(port), ""].join("\n"))
  // -db: stay in the foreground, so the test owns the process.
  const child = spawn(haproxyBinary, ["-db", "-f", config], { stdio: ["ignore", "pipe", "pipe"] })
  let text = ""
  child.stdout!.on("data", (d: Buffer) => (text += d.toString()))
  child.stderr!.on("data", (d: Buffer) => (text += d.toString()))
  const output = () => text
  await waitUntilServing(port, child, output)
  return {
    port,
    output,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve))
        child.kill("SIGTERM")
        await exited
      }
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
