/** Dialling helpers shared by the load generator and the setup-rate bench. */
import { WebSocket } from "ws"

/** Run `fn` over `items` with at most `limit` in flight. */
export const pool = async <A>(items: ReadonlyArray<A>, limit: number, fn: (a: A) => Promise<void>): Promise<void> => {
  let next = 0
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as A
      await fn(item)
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane))
}

/** Open a socket; resolves once the upgrade completed, rejects on failure or after 10 s. */
export const openSocket = (url: string, headers: Record<string, string>): Promise<WebSocket> =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      headers,
      perMessageDeflate: false,
      skipUTF8Validation: true,
      // Random masking keys, as every real client sends: with all-zero keys `ws` skips its unmask
      // pass entirely, and the servers under test would be measured without their largest
      // per-byte cost (the load generator masks with `bufferutil` when it loads).
      handshakeTimeout: 10_000
    })
    ws.on("error", () => {}) // failures surface as the rejection below or as "close"
    ws.once("error", reject)
    ws.once("open", () => {
      ws.off("error", reject)
      resolve(ws)
    })
  })

export const binaryHeaders = (serverId: string): Record<string, string> => ({
  "X-Pyrycode-Server": serverId,
  "X-Pyrycode-Version": "bench",
  "User-Agent": "bench"
})

export const phoneHeaders = (serverId: string): Record<string, string> => ({
  "X-Pyrycode-Server": serverId,
  "X-Pyrycode-Token": "bench-token",
  "User-Agent": "bench"
})
