/**
 * Runs the programs in docs/examples as a user would (a Node process, `PORT` in the environment)
 * and checks what each promises: the in-repo test runs them on the sources, the packed-package
 * test on a fresh install of the tarball under the machine's Node 20.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { expect } from "vitest"
import { dialBinary, dialPhone, envelopes, eventually, type Peer } from "./Peers.ts"
import { freePort } from "./RelayProcess.ts"

export const EXAMPLES = ["app-with-relay.mjs", "admin-counts.mjs"] as const

export interface ExampleRun {
  readonly child: ChildProcess
  readonly ports: { readonly port: number; readonly adminPort: number }
  /** Everything the program wrote, stdout and stderr interleaved. */
  readonly output: () => string
  /** SIGTERM, then its exit code (`null` when killed by a signal). */
  readonly stop: () => Promise<number | null>
}

const get = async (url: string): Promise<{ status: number; text: string }> => {
  const response = await fetch(url)
  return { status: response.status, text: await response.text() }
}

const answers = async (url: string): Promise<boolean> => {
  try {
    return (await fetch(url)).status === 200
  } catch {
    return false
  }
}

/** Starts `file` with `node` and waits until `readyPath` answers 200 on the port it serves. */
export const runExample = async (options: {
  readonly node: string
  readonly nodeArgs?: ReadonlyArray<string>
  readonly cwd: string
  readonly file: string
}): Promise<ExampleRun> => {
  const ports = { port: await freePort(), adminPort: await freePort() }
  const child = spawn(options.node, [...(options.nodeArgs ?? []), options.file], {
    cwd: options.cwd,
    env: { ...process.env, PORT: String(ports.port), ADMIN_PORT: String(ports.adminPort) },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()))
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()))
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  const run: ExampleRun = {
    child,
    ports,
    output: () => output,
    stop: () => {
      child.kill("SIGTERM")
      return exited
    }
  }
  try {
    await eventually(() => answers(`http://127.0.0.1:${ports.port}/healthz`), 20_000)
  } catch (error) {
    child.kill("SIGKILL")
    throw new Error(`${options.file} did not come up: ${output}`, { cause: error })
  }
  return run
}

/** A binary and a phone of `serverId`; one frame each way. */
const roundTrip = async (port: number, serverId: string): Promise<{ binary: Peer; phone: Peer }> => {
  const base = `ws://127.0.0.1:${port}`
  const binary = await dialBinary(base, serverId)
  const phone = await dialPhone(base, serverId)
  phone.send(`{"ask":1}`)
  await binary.waitFor(1)
  const [envelope] = envelopes(binary)
  expect(envelope!.frame).toEqual({ ask: 1 })
  binary.send(JSON.stringify({ conn_id: envelope!.conn_id, frame: { answer: 2 } }))
  await phone.waitFor(1)
  expect(JSON.parse(phone.messages[0]!)).toEqual({ answer: 2 })
  return { binary, phone }
}

/** Shuts the program down and checks that the relay drained its peers and the program exited. */
const stopAndDrain = async (run: ExampleRun, peers: ReadonlyArray<Peer>): Promise<void> => {
  const code = await run.stop()
  for (const peer of peers) expect(await peer.closed).toEqual({ code: 1001, reason: "shutting down" })
  // Effect's `runMain` exits 130 when its main fiber was interrupted by the signal.
  expect(code).toBe(130)
  expect(run.output()).toContain("shutdown complete")
}

/** docs/examples/app-with-relay.mjs: the app's route, health and metrics, the relay, one port. */
export const checkAppWithRelay = async (run: ExampleRun): Promise<void> => {
  const base = `http://127.0.0.1:${run.ports.port}`
  expect(await get(`${base}/api/hello`)).toEqual({ status: 200, text: "hello from the app" })
  expect((await get(`${base}/nowhere`)).status).toBe(404)
  expect((await get(`${base}/v1/client`)).status).toBe(426)
  const { binary, phone } = await roundTrip(run.ports.port, "example")
  expect(JSON.parse((await get(`${base}/healthz`)).text)).toMatchObject({
    status: "ok",
    connected_binaries: 1,
    connected_phones: 1
  })
  const metrics = (await get(`${base}/metrics`)).text
  expect(metrics).toContain("example_greetings_total 1")
  expect(metrics).toContain(`pyrycode_relay_frames_forwarded_total{direction="phone_to_binary"} 1`)
  expect(metrics).toContain(`pyrycode_relay_frames_forwarded_total{direction="binary_to_phone"} 1`)
  await stopAndDrain(run, [binary, phone])
  // The relay's lines went through the app's logger (Effect's JSON logger), as did the app's.
  expect(run.output()).toMatch(/"message":"relay started".*"listen":"mounted"/)
  expect(run.output()).toContain(`"message":"greeted"`)
}

/** docs/examples/admin-counts.mjs: the app's admin routes read the relay's `Registry`. */
export const checkAdminCounts = async (run: ExampleRun): Promise<void> => {
  const admin = `http://127.0.0.1:${run.ports.adminPort}/admin`
  expect(JSON.parse((await get(`${admin}/counts`)).text)).toEqual({ binaries: 0, phones: 0 })
  const { binary, phone } = await roundTrip(run.ports.port, "admin-demo")
  const second = await dialPhone(`ws://127.0.0.1:${run.ports.port}`, "admin-demo")
  await eventually(async () => (await get(`${admin}/counts`)).text === `{"binaries":1,"phones":2}`)
  expect(JSON.parse((await get(`${admin}/servers/admin-demo`)).text)).toEqual({
    server_id: "admin-demo",
    connected: true
  })
  expect(JSON.parse((await get(`${admin}/servers/elsewhere`)).text)).toEqual({
    server_id: "elsewhere",
    connected: false
  })
  await stopAndDrain(run, [binary, phone, second])
  expect(run.output()).toMatch(/"event":"relay started"/)
}
