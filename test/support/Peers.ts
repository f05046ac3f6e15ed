/**
 * Real `ws` clients speaking the pyrycode protocol: a binary on `/v1/server`, phones on
 * `/v1/client`. Every message is collected, so tests can wait for the n-th one.
 */
import WebSocket from "ws"

export interface Peer {
  readonly ws: WebSocket
  readonly messages: Array<string>
  /** Opcode of each message: true when it arrived as a binary frame. */
  readonly binaryFlags: Array<boolean>
  readonly closed: Promise<{ code: number; reason: string }>
  /** Waits until at least `n` messages arrived. */
  readonly waitFor: (n: number, timeoutMs?: number) => Promise<Array<string>>
  readonly send: (text: string) => void
}

export interface DialOptions {
  readonly headers?: Record<string, string>
  readonly ca?: Buffer
  /** Extra `ws` client options, e.g. `{ autoPong: false }` for a peer that never answers pings. */
  readonly wsOptions?: WebSocket.ClientOptions
}

const wrap = (ws: WebSocket): Peer => {
  const messages: Array<string> = []
  const binaryFlags: Array<boolean> = []
  const waiters: Array<() => void> = []
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    messages.push(data.toString("utf8"))
    binaryFlags.push(isBinary)
    for (const w of waiters.splice(0)) w()
  })
  ws.on("error", () => {})
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on("close", (code: number, reason: Buffer) => {
      resolve({ code, reason: reason.toString() })
      for (const w of waiters.splice(0)) w()
    })
  )
  const waitFor = async (n: number, timeoutMs = 5000) => {
    const deadline = Date.now() + timeoutMs
    while (messages.length < n) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} messages (have ${messages.length})`)
      if (ws.readyState === WebSocket.CLOSED) throw new Error(`closed after ${messages.length} of ${n} messages`)
      await new Promise<void>((resolve) => {
        waiters.push(resolve)
        setTimeout(resolve, 50)
      })
    }
    return messages
  }
  return { ws, messages, binaryFlags, closed, waitFor, send: (text) => ws.send(text) }
}

const open = (url: string, headers: Record<string, string>, options: DialOptions): Promise<Peer> =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ...options.wsOptions, headers, ...(options.ca ? { ca: options.ca } : {}) })
    const peer = wrap(ws)
    ws.once("open", () => resolve(peer))
    ws.once("unexpected-response", (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)))
    ws.once("error", reject)
  })

export const dialBinary = (base: string, serverId: string, options: DialOptions = {}): Promise<Peer> =>
  open(`${base}/v1/server`, {
    "X-Pyrycode-Server": serverId,
    "X-Pyrycode-Version": "test-1.0",
    "User-Agent": "pyry-test",
    ...options.headers
  }, options)

export const dialPhone = (base: string, serverId: string, options: DialOptions = {}): Promise<Peer> =>
  open(`${base}/v1/client`, {
    "X-Pyrycode-Server": serverId,
    "X-Pyrycode-Token": "test-token",
    "User-Agent": "pyrycode-android-test",
    ...options.headers
  }, options)

/** The HTTP status a refused upgrade got. */
export const upgradeStatus = (
  url: string,
  headers: Record<string, string>,
  wsOptions: WebSocket.ClientOptions = {}
): Promise<number> =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ...wsOptions, headers })
    ws.once("unexpected-response", (_req, res) => {
      resolve(res.statusCode ?? 0)
      ws.terminate()
    })
    ws.once("open", () => {
      ws.terminate()
      reject(new Error("upgrade unexpectedly succeeded"))
    })
    ws.once("error", () => {})
  })

/** Parses `{"conn_id":…}` envelopes a binary received. */
export const envelopes = (peer: Peer): Array<Record<string, unknown>> =>
  peer.messages.map((m) => JSON.parse(m) as Record<string, unknown>)

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Polls `check` until it returns true. */
export const eventually = async (check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time")
    await sleep(20)
  }
}

/** The peer's close, or a failure naming what was waited for when none comes within `timeoutMs`. */
export const closedWithin = (peer: Peer, timeoutMs = 5000): Promise<{ code: number; reason: string }> =>
  Promise.race([
    peer.closed,
    sleep(timeoutMs).then(() => {
      throw new Error(`not closed within ${timeoutMs} ms (${peer.messages.length} messages received)`)
    })
  ])

/**
 * Waits until a relay logged `count` phone registrations for `serverId`. In cluster mode a
 * binary's claim and a phone's registration are Redis round trips after their 101s: a test that
 * drops a binary right after dialling its phone waits for this first, or the binary may be gone
 * before its claim landed (and the phone then joins the next binary's claim).
 */
export const phonesRegistered = (relay: { readonly logs: ReadonlyArray<string> }, serverId: string, count = 1): Promise<void> =>
  eventually(() => relay.logs.filter((l) => l.includes('"phone registered"') && l.includes(`"${serverId}"`)).length >= count)
