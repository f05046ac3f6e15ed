/**
 * Hand-written HTTP/1.x request heads and a parser for the responses that come back over raw TCP,
 * for the handshake tests (SPEC §1.2): header lines can repeat, be empty or be missing, the
 * request line can name any method or version, and several requests can share one TCP write.
 */
import * as Net from "node:net"

export type HeaderLines = ReadonlyArray<readonly [string, string]>

export interface RequestSpec {
  readonly path: string
  readonly method?: string
  /** The request line's version, `HTTP/1.1` by default. */
  readonly version?: string
  /** Header lines in order, repeats allowed. */
  readonly headers: HeaderLines
}

/** The request line and header lines, exactly as given. */
export const requestHead = (spec: RequestSpec): string =>
  [`${spec.method ?? "GET"} ${spec.path} ${spec.version ?? "HTTP/1.1"}`, ...spec.headers.map(([k, v]) => `${k}: ${v}`)]
    .join("\r\n") + "\r\n\r\n"

/** The handshake header lines of a valid WebSocket upgrade (RFC 6455 §4.1). */
export const handshakeLines: HeaderLines = [
  ["Host", "127.0.0.1"],
  ["Upgrade", "websocket"],
  ["Connection", "Upgrade"],
  ["Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="],
  ["Sec-WebSocket-Version", "13"]
]

/** `lines` with every line named `name` (case-insensitive) replaced by `replacement` (none: removed). */
export const replaceLines = (lines: HeaderLines, name: string, ...replacement: HeaderLines): HeaderLines => {
  const at = lines.findIndex(([k]) => k.toLowerCase() === name.toLowerCase())
  const rest = lines.filter(([k]) => k.toLowerCase() !== name.toLowerCase())
  return at === -1 ? [...rest, ...replacement] : [...rest.slice(0, at), ...replacement, ...rest.slice(at)]
}

export interface RawResponse {
  readonly status: number
  readonly statusLine: string
  /** Header names lower-cased; repeated headers keep every value. */
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: Buffer
}

export const header = (response: RawResponse, name: string): Array<string> =>
  response.headers.filter(([k]) => k === name.toLowerCase()).map(([, v]) => v)

/**
 * Parses consecutive HTTP responses off the front of `buf`; stops after a 101 (what follows is
 * WebSocket frames) or at an incomplete response. Bodies are framed by `Content-Length` (a
 * response without one, other than 101, takes the rest of the bytes).
 */
export const parseResponses = (buf: Buffer): { responses: Array<RawResponse>; rest: Buffer } => {
  const responses: Array<RawResponse> = []
  let offset = 0
  for (;;) {
    const end = buf.indexOf("\r\n\r\n", offset)
    if (end === -1) break
    const [statusLine = "", ...lines] = buf.subarray(offset, end).toString("latin1").split("\r\n")
    const headers = lines.map((line): readonly [string, string] => {
      const colon = line.indexOf(":")
      return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()]
    })
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0)
    const length = headers.find(([k]) => k === "content-length")?.[1]
    const bodyStart = end + 4
    const bodyEnd = status === 101 ? bodyStart : length === undefined ? buf.length : bodyStart + Number(length)
    if (bodyEnd > buf.length) break
    responses.push({ status, statusLine, headers, body: buf.subarray(bodyStart, bodyEnd) })
    offset = bodyEnd
    if (status === 101) break
  }
  return { responses, rest: buf.subarray(offset) }
}

export interface Exchange {
  /** Every byte the relay sent. */
  readonly bytes: Buffer
  /** The relay closed the connection (as opposed to `until` holding or the timeout). */
  readonly closedByRelay: boolean
}

/**
 * Connects, sends `request` in ONE write, and collects what the relay sends until it closes the
 * connection, `until` holds over the bytes so far, or `timeoutMs` passes; then destroys the socket.
 */
export const exchange = (
  port: number,
  request: Buffer | string,
  options: { readonly until?: (bytes: Buffer) => boolean; readonly timeoutMs?: number } = {}
): Promise<Exchange> =>
  new Promise((resolve) => {
    const socket = Net.connect(port, "127.0.0.1")
    socket.setNoDelay(true)
    let bytes: Buffer = Buffer.alloc(0)
    let done = false
    const finish = (closedByRelay: boolean) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ bytes, closedByRelay })
    }
    const timer = setTimeout(() => finish(false), options.timeoutMs ?? 5000)
    socket.on("error", () => {})
    socket.on("data", (d: Buffer) => {
      bytes = Buffer.concat([bytes, d])
      if (options.until?.(bytes)) finish(false)
    })
    socket.on("end", () => finish(true))
    socket.on("close", () => finish(true))
    socket.once("connect", () => socket.write(request))
  })

/** Whether the bytes so far hold a complete 101 head. */
export const upgraded = (bytes: Buffer): boolean => parseResponses(bytes).responses.some((r) => r.status === 101)

/** The responses to one request written alone (the relay is expected to answer and close). */
export const respond = async (port: number, spec: RequestSpec): Promise<Array<RawResponse>> => {
  const { bytes } = await exchange(port, requestHead(spec), { until: upgraded })
  return parseResponses(bytes).responses
}
