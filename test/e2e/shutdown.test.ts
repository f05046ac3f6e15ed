/**
 * Shutdown (SPEC §10) against the relay process: SIGTERM drains every connection with 1001 and
 * exits 0; `npm start -- <flags>` passes flags through and stops on SIGTERM.
 */
import { spawn } from "node:child_process"
import * as Path from "node:path"
import { describe, expect, it } from "vitest"
import { freePort, startRelay } from "../support/RelayProcess.ts"
import { dialBinary, dialPhone, eventually, sleep } from "../support/Peers.ts"
import { rawUpgrade } from "../../bench/lib/raw.ts"

describe("SIGTERM", () => {
  it("closes binaries, phones of a gracing binary and live phones 1001 `shutting down` and exits 0", async () => {
    const relay = await startRelay(["--grace-period", "30s"])
    expect((await fetch(`${relay.httpUrl}/readyz`)).status).toBe(200)
    const live = await dialBinary(relay.url, "live")
    const livePhone = await dialPhone(relay.url, "live")
    const gracing = await dialBinary(relay.url, "gracing")
    const orphan = await dialPhone(relay.url, "gracing")
    gracing.ws.terminate()
    await eventually(async () => {
      const health = (await (await fetch(`${relay.httpUrl}/healthz`)).json()) as { connected_binaries: number }
      return health.connected_binaries === 1
    })
    const started = Date.now()
    const code = await relay.stop("SIGTERM")
    const elapsed = Date.now() - started
    expect(code).toBe(0)
    expect(elapsed).toBeLessThan(5_000)
    for (const peer of [live, livePhone, orphan]) {
      expect(await peer.closed).toEqual({ code: 1001, reason: "shutting down" })
    }
    expect(relay.logs.some((l) => l.includes(`"shutdown started"`))).toBe(true)
    expect(relay.logs.some((l) => l.includes(`"shutdown complete"`))).toBe(true)
  })
})

describe("a second signal during the drain", () => {
  it("is ignored: the drain runs to its deadline and the exit code is still 0", async () => {
    const relay = await startRelay(["--drain-timeout", "2s", "--close-timeout", "10s"])
    // A binary that never reads holds the drain until its deadline.
    const stuck = await rawUpgrade(relay.port, "/v1/server", {
      "X-Pyrycode-Server": "stuck",
      "X-Pyrycode-Version": "1",
      "User-Agent": "u"
    })
    const started = Date.now()
    relay.child.kill("SIGTERM")
    await sleep(300)
    relay.child.kill("SIGINT")
    relay.child.kill("SIGTERM")
    const code = await relay.exited
    const elapsed = Date.now() - started
    expect(code).toBe(0)
    expect(elapsed).toBeGreaterThanOrEqual(1800)
    expect(elapsed).toBeLessThan(5000)
    expect(relay.logs.some((l) => l.includes(`"drain incomplete"`))).toBe(true)
    stuck.destroy()
  })
})

describe("npm start", () => {
  it("passes flags through and exits 0 on SIGTERM", async () => {
    const port = await freePort()
    const root = Path.resolve(import.meta.dirname, "../..")
    const child = spawn("npm", ["start", "--", "--listen", `127.0.0.1:${port}`, "--metrics-listen", ""], {
      cwd: root,
      env: { ...process.env, PATH: `${Path.join(root, "node_modules/.bin")}:${process.env.PATH}` },
      stdio: ["ignore", "ignore", "pipe"]
    })
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
    await eventually(async () => {
      try {
        return (await fetch(`http://127.0.0.1:${port}/healthz`)).status === 200
      } catch {
        return false
      }
    }, 20_000)
    child.kill("SIGTERM")
    expect(await exited).toBe(0)
    await sleep(100)
    await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow()
  })
})
