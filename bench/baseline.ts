/**
 * Baseline relay for benchmarks: the SPEC §1.2–1.4 / §2.1–2.4 forwarding path written directly on
 * `ws`, as fast as we know how, to compare the real relay against.
 *
 *   node bench/baseline.ts --listen 127.0.0.1:PORT [--flush immediate|microtask|sync]
 *
 * Deliberately missing: grace (a binary's disconnect closes its phones 1000 at once), heartbeat,
 * conflict probe (a duplicate claim is always 4409), rate limits/caps, message-completion timer,
 * metrics, logs. Kept: header gate, 4404/4409/4429, JSON check, raw splice both ways, close
 * directive after queued frames, close notices, a 4 MiB per-socket backlog bound.
 *
 * Speed: all writes of one event-loop turn go out per socket in one corked burst (lib/batch.ts;
 * setImmediate and microtask flushing measured equal, unbatched `--flush sync` costs ~3x the CPU);
 * phone frames are spliced as bytes (no re-encode); binary frames are forwarded as a zero-copy
 * slice of the received bytes when the envelope is ASCII.
 */
import { isUtf8 } from "node:buffer"
import { randomBytes } from "node:crypto"
import * as http from "node:http"
import type { Duplex } from "node:stream"
import { parseArgs } from "node:util"
import { WebSocket, WebSocketServer } from "ws"
import { Outbox, parseFlushMode, setFlushMode } from "./lib/batch.ts"
import { memberSpan } from "./lib/jsonspan.ts"

const MAX_PAYLOAD = 262_144
const MAX_PHONES = 16
const BACKLOG = 4_194_304

interface Slot {
  readonly serverId: string
  readonly binary: WebSocket
  readonly out: Outbox
  readonly phones: Map<string, Phone>
}

interface Phone {
  readonly connId: string
  readonly ws: WebSocket
  readonly out: Outbox
  /** `{"conn_id":"…","frame":` with the id JSON-escaped (server-ids are attacker-controlled). */
  readonly prefix: Buffer
  /** Closing: no more frames to or from it. */
  closing: boolean
  /** Closed by the binary's directive: no close notice (SPEC §2.4). */
  byBinary: boolean
}

const slots = new Map<string, Slot>()
const CLOSE_BRACE = Buffer.from("}")

const backlogOf = (out: Outbox): number => out.bytes + out.ws.bufferedAmount

/** Close codes that may appear on the wire; others become 1011 (SPEC §2.3). */
const wireCode = (c: number): number =>
  c < 1000 || (c >= 1004 && c <= 1006) || (c >= 1015 && c <= 2999) || c >= 5000 ? 1011 : c

const endPhone = (p: Phone, code: number, reason = ""): void => {
  if (p.closing) return
  p.closing = true
  p.ws.close(code, reason)
}

const onBinary = (ws: WebSocket, serverId: string): void => {
  if (slots.has(serverId)) {
    ws.close(4409, "server-id already claimed")
    return
  }
  const slot: Slot = { serverId, binary: ws, out: new Outbox(ws), phones: new Map() }
  slots.set(serverId, slot)

  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (isBinary && !isUtf8(data)) return // not JSON (text messages are UTF-8-checked by ws)
    const text = data.toString()
    let env: unknown
    try {
      env = JSON.parse(text)
    } catch {
      return // malformed: drop
    }
    if (typeof env !== "object" || env === null || Array.isArray(env)) return
    const e = env as Record<string, unknown>
    const cid = e["conn_id"]
    const cc = e["close_code"]
    if (cid !== undefined && cid !== null && typeof cid !== "string") return
    let code = 0
    if (cc !== undefined && cc !== null) {
      if (typeof cc !== "number" || !Number.isInteger(cc) || cc < 0 || cc > 65535) return
      code = cc
    }
    if (typeof cid !== "string" || cid === "") return // push wake (off) or missing conn_id
    const hasFrame = e["frame"] !== undefined && e["frame"] !== null
    if (code === 0 && !hasFrame) return // missing frame
    const phone = slot.phones.get(cid)
    if (phone === undefined || phone.closing) return // unknown conn_id / refused
    if (hasFrame) {
      const span = memberSpan(text, "frame")
      if (span === undefined) return
      // Pure ASCII (byte length = string length): forward a zero-copy view of the received bytes.
      const raw = data.length === text.length ? data.subarray(span[0], span[1]) : text.slice(span[0], span[1])
      if (backlogOf(phone.out) + raw.length > BACKLOG) {
        phone.closing = true
        phone.byBinary = code !== 0
        phone.out.close(code !== 0 ? wireCode(code) : 1011, code !== 0 ? "" : "phone backlog full")
        return
      }
      phone.out.send(raw)
    }
    if (code !== 0) {
      phone.closing = true
      phone.byBinary = true
      phone.out.close(wireCode(code))
    }
  })

  ws.on("close", () => {
    if (slots.get(serverId) !== slot) return
    slots.delete(serverId)
    for (const p of slot.phones.values()) endPhone(p, 1000)
    slot.phones.clear()
  })
  ws.on("error", () => {})
}

const newConnId = (slot: Slot): string => {
  for (let i = 0; i < 1000; i++) {
    const id = `client-${slot.serverId}-${randomBytes(4).toString("hex")}`
    if (!slot.phones.has(id)) return id
  }
  throw new Error("conn_id space exhausted")
}

const onPhone = (ws: WebSocket, serverId: string): void => {
  const slot = slots.get(serverId)
  if (slot === undefined) {
    ws.close(4404, "no server with that id")
    return
  }
  if (slot.phones.size >= MAX_PHONES) {
    ws.close(4429, "too many phones for server-id")
    return
  }
  const connId = newConnId(slot)
  const quoted = JSON.stringify(connId)
  const prefix = Buffer.from(`{"conn_id":${quoted},"frame":`)
  const phone: Phone = { connId, ws, out: new Outbox(ws), prefix, closing: false, byBinary: false }
  slot.phones.set(connId, phone)

  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (phone.closing) return
    const text = data.toString()
    try {
      if (isBinary && !isUtf8(data)) throw new Error("not UTF-8")
      JSON.parse(text)
    } catch {
      endPhone(phone, 1000)
      return
    }
    const current = slots.get(serverId) // the binary holding the server-id now (SPEC §2.1.3)
    if (current === undefined) {
      endPhone(phone, 1000)
      return
    }
    if (backlogOf(current.out) + text.length > BACKLOG) {
      endPhone(phone, 1011, "binary backlog full")
      return
    }
    current.out.send(Buffer.concat([phone.prefix, data, CLOSE_BRACE])) // splice the original bytes
  })

  ws.on("close", (code: number) => {
    if (slot.phones.get(connId) !== phone) return
    slot.phones.delete(connId)
    if (phone.byBinary || slots.get(serverId) !== slot) return
    const n = code === 1005 || code === 1006 ? 1001 : code
    slot.out.send(`{"conn_id":${quoted},"close_code":${n}}`)
  })
  ws.on("error", () => {})
}

// ---- HTTP / upgrade -------------------------------------------------------------------------

const STATUS: Record<number, string> = { 400: "Bad Request", 404: "Not Found" }

const reject = (socket: Duplex, status: number): void => {
  socket.end(`HTTP/1.1 ${status} ${STATUS[status] ?? ""}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
}

const header = (req: http.IncomingMessage, name: string): string | undefined => {
  const v = req.headers[name]
  return typeof v === "string" && v.length > 0 ? v : undefined
}

const main = (): void => {
  const { values } = parseArgs({
    options: { listen: { type: "string" }, flush: { type: "string" } },
    strict: true
  })
  const listen = values.listen ?? "127.0.0.1:8080"
  const colon = listen.lastIndexOf(":")
  const host = listen.slice(0, colon)
  const port = Number(listen.slice(colon + 1))
  if (host !== "127.0.0.1" || !Number.isInteger(port) || port <= 0 || port > 65535) {
    process.stderr.write(`--listen must be 127.0.0.1:PORT (got ${listen})\n`)
    process.exit(2)
  }
  setFlushMode(parseFlushMode(values.flush, "immediate"))

  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD, perMessageDeflate: false })
  const server = http.createServer((req, res) => {
    const p = (req.url ?? "").split("?")[0]
    res.writeHead(p === "/v1/server" || p === "/v1/client" ? 400 : 404, { "Content-Length": "0" }).end()
  })

  server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => {})
    const p = (req.url ?? "").split("?")[0]
    const serverId = header(req, "x-pyrycode-server")
    const ua = header(req, "user-agent")
    if (p === "/v1/server") {
      if (serverId === undefined || ua === undefined || header(req, "x-pyrycode-version") === undefined) {
        return reject(socket, 400)
      }
      wss.handleUpgrade(req, socket, head, (ws) => onBinary(ws, serverId))
    } else if (p === "/v1/client") {
      if (serverId === undefined || ua === undefined || header(req, "x-pyrycode-token") === undefined) {
        return reject(socket, 400)
      }
      wss.handleUpgrade(req, socket, head, (ws) => onPhone(ws, serverId))
    } else {
      reject(socket, 404)
    }
  })

  const stop = (): void => {
    server.close()
    for (const ws of wss.clients) ws.close(1001, "shutting down")
    setTimeout(() => process.exit(0), 200).unref()
    setTimeout(() => {
      for (const ws of wss.clients) ws.terminate()
    }, 100).unref()
  }
  process.once("SIGTERM", stop)
  process.once("SIGINT", stop)
  server.listen(port, host, () => process.stderr.write(`baseline listening on ${host}:${port}\n`))
}

main()
