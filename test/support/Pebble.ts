/**
 * Pebble, Let's Encrypt's ACME test CA (Debian package `pebble`), started by a test on loopback.
 * Its HTTP-01 validation connects to `<name>:<httpPort>`, so `httpPort` is the relay's
 * `--http-listen` port; names resolve through `pebble-challtestsrv` (same package) as a DNS
 * server that answers 127.0.0.1 for every name. Pebble's own HTTPS listener gets a certificate
 * from a throwaway CA made here, passed to the relay as `--acme-ca-file`.
 *
 * `PEBBLE_VA_NOSLEEP=1` and `PEBBLE_WFE_NONCEREJECT=0` keep it fast and deterministic.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import * as Https from "node:https"
import * as Path from "node:path"
import { freePort } from "./RelayProcess.ts"
import { type Issued, issueServerCertificate } from "./TestCa.ts"

const found = (name: string): string | undefined =>
  [name, `/usr/bin/${name}`, `/usr/local/bin/${name}`].find((candidate) =>
    spawnSync(candidate, ["-h"], { stdio: "ignore" }).error === undefined
  )

export const pebbleBinary = found("pebble")
export const challtestsrvBinary = found("pebble-challtestsrv")

export interface PebbleOptions {
  /** Port HTTP-01 validation connects to (the relay's --http-listen). */
  readonly httpPort: number
  /** Lifetime of issued certificates, in seconds (Pebble's default is 5 years). */
  readonly validitySeconds?: number
  /** Where config and certificates go (a fresh directory per Pebble). */
  readonly dir: string
  /** Pebble's ACME port; a free one when not given. */
  readonly port?: number
  /** Pebble's own HTTPS certificate; made here when not given (give one to start Pebble later at a known CA). */
  readonly tls?: Issued
}

export interface Pebble {
  readonly directoryUrl: string
  readonly port: number
  /** The CA of Pebble's own HTTPS listener (for --acme-ca-file). */
  readonly caFile: string
  readonly caPem: Buffer
  /** Pebble's issuing root, regenerated at every start (to verify what it issued). */
  readonly issuingRoot: () => Promise<string>
  /** Pebble's log so far (orders, validations). */
  readonly output: () => string
  readonly stop: () => Promise<void>
}

const get = (url: string, ca: Buffer): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    Https.get(url, { ca }, (res) => {
      let body = ""
      res.on("data", (d: Buffer) => (body += d.toString()))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
    }).once("error", reject)
  })

const stopChild = async (child: ChildProcess): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once("exit", resolve))
  child.kill("SIGTERM")
  await exited
}

/** A certificate for Pebble's HTTPS listener (127.0.0.1), from a fresh CA in `dir`. */
export const pebbleTls = (dir: string): Issued => {
  mkdirSync(dir, { recursive: true })
  return issueServerCertificate(dir, ["127.0.0.1", "localhost"], "pebble")
}

export const startPebble = async (options: PebbleOptions): Promise<Pebble> => {
  if (pebbleBinary === undefined || challtestsrvBinary === undefined) throw new Error("pebble is not installed")
  mkdirSync(options.dir, { recursive: true })
  const tls = options.tls ?? pebbleTls(options.dir)
  const port = options.port ?? await freePort()
  const management = await freePort()
  const dns = await freePort()
  const dnsManagement = await freePort()
  const unusedTlsPort = await freePort()
  const config = Path.join(options.dir, "pebble-config.json")
  writeFileSync(config, JSON.stringify({
    pebble: {
      listenAddress: `127.0.0.1:${port}`,
      managementListenAddress: `127.0.0.1:${management}`,
      certificate: tls.certFile,
      privateKey: tls.keyFile,
      httpPort: options.httpPort,
      tlsPort: unusedTlsPort,
      ocspResponderURL: "",
      externalAccountBindingRequired: false,
      ...(options.validitySeconds === undefined ? {} : { certificateValidityPeriod: options.validitySeconds })
    }
  }))

  let text = ""
  const record = (child: ChildProcess) => {
    child.stdout!.on("data", (d: Buffer) => (text += d.toString()))
    child.stderr!.on("data", (d: Buffer) => (text += d.toString()))
  }
  const dnsServer = spawn(challtestsrvBinary, [
    "-defaultIPv4", "127.0.0.1",
    "-defaultIPv6", "",
    "-dns01", `127.0.0.1:${dns}`,
    "-http01", "",
    "-https01", "",
    "-tlsalpn01", "",
    "-management", `127.0.0.1:${dnsManagement}`
  ], { stdio: ["ignore", "pipe", "pipe"] })
  record(dnsServer)
  const pebble = spawn(pebbleBinary, ["-config", config, "-dnsserver", `127.0.0.1:${dns}`, "-strict=false"], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, PEBBLE_VA_NOSLEEP: "1", PEBBLE_WFE_NONCEREJECT: "0" }
  })
  record(pebble)
  const stop = async () => {
    await Promise.all([stopChild(pebble), stopChild(dnsServer)])
  }

  const directoryUrl = `https://127.0.0.1:${port}/dir`
  for (let i = 0; ; i++) {
    if (pebble.exitCode !== null) {
      await stop()
      throw new Error(`pebble exited ${pebble.exitCode}:\n${text}`)
    }
    const ready = await get(directoryUrl, tls.caPem).then((r) => r.status === 200, () => false)
    if (ready) break
    if (i > 200) {
      await stop()
      throw new Error(`pebble did not start:\n${text}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }

  return {
    directoryUrl,
    port,
    caFile: tls.caFile,
    caPem: tls.caPem,
    issuingRoot: async () => (await get(`https://127.0.0.1:${management}/roots/0`, tls.caPem)).body,
    output: () => text,
    stop
  }
}
