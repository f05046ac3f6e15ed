/**
 * Production hardening against the real `/proc/self/status` (EDGE.md §4): the relay is started as
 * an unprivileged user holding chosen ambient capabilities (`setpriv`, util-linux), the way a
 * systemd unit with `AmbientCapabilities=` would start it. With CAP_NET_BIND_SERVICE alone it
 * starts (and can bind a port below 1024); with one more capability it refuses, naming it.
 *
 * Needs root (to hand out capabilities) and `setpriv`; otherwise it skips with one line.
 */
import { spawn, spawnSync } from "node:child_process"
import * as Net from "node:net"
import * as Path from "node:path"
import { describe, expect, it } from "vitest"
import { freePort, RELAY_ENTRY } from "../support/RelayProcess.ts"

const ROOT = Path.resolve(import.meta.dirname, "../..")
const NODE = Path.join(ROOT, "node_modules/.bin/node")
const NOBODY = "65534"

const setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => spawnSync(p, ["--version"]).status === 0)
const isRoot = process.getuid?.() === 0
/** The checkout must be readable by the unprivileged user (a root-only CI clone is not). */
const readableByNobody = setpriv !== undefined && isRoot &&
  spawnSync(setpriv, ["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", NODE, "-e", "require('fs').readFileSync('dist/service/relay.mjs')"], {
    cwd: ROOT
  }).status === 0
const runnable = readableByNobody
if (!runnable) {
  console.warn(
    `capabilities.test.ts: SKIPPED — needs root, setpriv (Debian package util-linux) and a checkout readable by uid ${NOBODY} ` +
      `(root: ${isRoot}, setpriv: ${setpriv ?? "missing"})`
  )
}

/** Runs the relay as uid 65534 with exactly `caps` ambient; resolves on exit or on `relay started`. */
const runWithCaps = (caps: ReadonlyArray<string>, args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; stderr: string; started: boolean }>((resolve) => {
    const capList = caps.map((c) => `+${c}`).join(",")
    const privileges = caps.length === 0
      ? ["--inh-caps", "-all"]
      : ["--inh-caps", capList, "--ambient-caps", capList]
    const child = spawn(
      setpriv!,
      ["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", ...privileges, NODE, RELAY_ENTRY, ...args],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? "", PYRYCODE_RELAY_PRODUCTION: "1" } }
    )
    let stderr = ""
    let started = false
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString()
      if (!started && stderr.includes("relay started")) {
        started = true
        child.kill("SIGTERM")
      }
    })
    child.on("exit", (code) => resolve({ code, stderr, started }))
  })

/** A free TCP port below 1024 on 127.0.0.1 (only root, or CAP_NET_BIND_SERVICE, may bind it). */
const freeLowPort = async (): Promise<number> => {
  for (let port = 1000; port > 600; port--) {
    const free = await new Promise<boolean>((resolve) => {
      const server = Net.createServer()
      server.once("error", () => resolve(false))
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
    })
    if (free) return port
  }
  throw new Error("no free port below 1024")
}

describe.runIf(runnable)("PYRYCODE_RELAY_PRODUCTION=1 and the real effective capability set", () => {
  it("CAP_NET_BIND_SERVICE alone: starts, and binds a port below 1024 with it", async () => {
    const port = await freeLowPort()
    const result = await runWithCaps(["net_bind_service"], ["--listen", `127.0.0.1:${port}`, "--metrics-listen", ""])
    expect(result.started, result.stderr).toBe(true)
    expect(result.code).toBe(0)
  })

  it("no capabilities at all: starts", async () => {
    const result = await runWithCaps([], ["--listen", `127.0.0.1:${await freePort()}`, "--metrics-listen", ""])
    expect(result.started, result.stderr).toBe(true)
  })

  it("CAP_NET_BIND_SERVICE + CAP_NET_RAW + CAP_SYS_ADMIN: exit 2 before binding, one line naming the extra two", async () => {
    const port = await freePort()
    const result = await runWithCaps(
      ["net_bind_service", "net_raw", "sys_admin"],
      ["--listen", `127.0.0.1:${port}`, "--metrics-listen", ""]
    )
    expect(result.code, result.stderr).toBe(2)
    const lines = result.stderr.trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toBe(
      "pyrycode-relay: PYRYCODE_RELAY_PRODUCTION=1: the effective capability set holds CAP_NET_RAW, CAP_SYS_ADMIN (only CAP_NET_BIND_SERVICE is allowed)"
    )
    expect(result.started).toBe(false)
  })
})
