/**
 * A peer that stops reading for real: a raw TCP socket that completes the WebSocket upgrade by
 * hand and is then paused. (`ws` resumes its own socket when its parser drains, so pausing a
 * `ws` client is not a reliable stall.)
 */
import * as Net from "node:net"

/** A WebSocket upgrade request head, with `extra` raw header lines appended. */
export const upgradeHead = (path: string, headers: Record<string, string>, extra: ReadonlyArray<string> = []): string =>
  [
    `GET ${path} HTTP/1.1`,
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ...extra
  ].join("\r\n") + "\r\n\r\n"

export const rawUpgrade = (port: number, path: string, headers: Record<string, string>): Promise<Net.Socket> =>
  new Promise((resolve, reject) => {
    const socket = Net.connect(port, "127.0.0.1", () => socket.write(upgradeHead(path, headers)))
    let head = Buffer.alloc(0)
    const onData = (d: Buffer) => {
      head = Buffer.concat([head, d])
      const end = head.indexOf("\r\n\r\n")
      if (end === -1) return
      socket.off("data", onData)
      socket.pause()
      if (!head.toString("latin1").startsWith("HTTP/1.1 101")) {
        socket.destroy()
        return reject(new Error(head.toString("latin1").split("\r\n")[0]))
      }
      resolve(socket)
    }
    socket.on("data", onData)
    socket.on("error", () => {})
    socket.once("error", reject)
  })

/** A masked client text frame. */
export const textFrame = (text: string): Buffer => {
  const payload = Buffer.from(text)
  const mask = Buffer.from([7, 1, 3, 5])
  const len = payload.length
  const header = len < 126
    ? Buffer.from([0x81, 0x80 | len])
    : len < 65536
    ? Buffer.from([0x81, 0x80 | 126, len >> 8, len & 0xff])
    : (() => {
      const h = Buffer.alloc(10)
      h[0] = 0x81
      h[1] = 0x80 | 127
      h.writeBigUInt64BE(BigInt(len), 2)
      return h
    })()
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!))
  return Buffer.concat([header, mask, masked])
}
