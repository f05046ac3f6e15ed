/**
 * Pure parsers for the value syntaxes of SPEC §9: durations, byte sizes, counts and listen
 * addresses. Each returns the parsed value or a reason fragment; the caller prefixes the flag or
 * variable name, so a refusal reads `--grace-period: "abc" is not a duration (use 500ms, 30s, 2m)`.
 *
 * Reasons quote the offending input through `show`, which JSON-escapes it and cuts it short, so a
 * refusal stays one line whatever the operator typed.
 */
import { isIPv4, isIPv6 } from "node:net"
import * as Duration from "effect/Duration"
import * as Result from "effect/Result"
import type { ListenAddress } from "./RelayConfig.ts"

/** A parse result: the value, or why the input was refused (without the flag name). */
export type Parsed<A> = Result.Result<A, string>

const SHOW_MAX = 48

/** The input as a one-line JSON string literal, cut to a readable length. */
export const show = (raw: string): string =>
  JSON.stringify(raw.length > SHOW_MAX ? `${raw.slice(0, SHOW_MAX)}…` : raw)

const UNIT_MILLIS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const

/** Longest accepted duration. Beyond a day every knob here is a typo, and timers clamp at ~24.8 d. */
export const MAX_DURATION_MILLIS = 24 * 3_600_000

const DURATION_PART = /(\d+)(ms|s|m|h)/y
const DURATION_HINT = "(use 500ms, 30s, 2m)"

/**
 * `500ms`, `30s`, `2m`, `1h`, or a Go-style sum of them (`1m30s`). Whole numbers only, lower-case
 * units, no spaces, no sign: `-5s` and `1.5s` are refused rather than guessed at.
 *
 * A bare `0` is accepted and means zero (the unit of nothing does not matter); any other bare
 * number is refused as a missing unit, because `30` could mean seconds or milliseconds. Whether
 * zero makes sense for a given knob is decided by that setting's rule in `RelayConfigSchema`.
 */
export const parseDuration = (raw: string): Parsed<Duration.Duration> => {
  if (raw === "0") return Result.succeed(Duration.zero)
  if (/^\d+$/.test(raw)) return Result.fail(`${show(raw)} has no unit ${DURATION_HINT}`)
  if (raw.startsWith("-")) return Result.fail(`${show(raw)} is negative ${DURATION_HINT}`)
  if (raw.length === 0) return Result.fail(`${show(raw)} is not a duration ${DURATION_HINT}`)
  let millis = 0
  let at = 0
  while (at < raw.length) {
    DURATION_PART.lastIndex = at
    const part = DURATION_PART.exec(raw)
    if (part === null || part[1] === undefined || part[2] === undefined) {
      return Result.fail(`${show(raw)} is not a duration ${DURATION_HINT}`)
    }
    millis += Number(part[1]) * UNIT_MILLIS[part[2] as keyof typeof UNIT_MILLIS]
    at = DURATION_PART.lastIndex
  }
  if (millis > MAX_DURATION_MILLIS) return Result.fail(`${show(raw)} is longer than 24h`)
  return Result.succeed(Duration.millis(millis))
}

const SIZE_UNITS = { "": 1, KiB: 1_024, MiB: 1_048_576, GiB: 1_073_741_824 } as const
const SIZE_HINT = "(use bytes, or 256KiB, 4MiB)"

/**
 * Integer bytes: `262144`, `256KiB`, `4MiB` (also `GiB`). Binary units only, exact case: `256KB`
 * or `4mb` are refused instead of guessing between 1000 and 1024. No sign, no fraction.
 */
export const parseSize = (raw: string): Parsed<number> => {
  const match = /^(\d+)(KiB|MiB|GiB)?$/.exec(raw)
  if (match === null || match[1] === undefined) {
    return Result.fail(
      raw.startsWith("-") ? `${show(raw)} is negative ${SIZE_HINT}` : `${show(raw)} is not a size ${SIZE_HINT}`
    )
  }
  const bytes = Number(match[1]) * SIZE_UNITS[(match[2] ?? "") as keyof typeof SIZE_UNITS]
  if (!Number.isSafeInteger(bytes)) return Result.fail(`${show(raw)} is too large`)
  return Result.succeed(bytes)
}

/** A non-negative whole number in plain decimal digits (`1000`, not `1e3`, `+5` or `-1`). */
export const parseCount = (raw: string): Parsed<number> => {
  if (!/^\d+$/.test(raw)) {
    return Result.fail(
      raw.startsWith("-") ? `${show(raw)} is negative` : `${show(raw)} is not a whole number`
    )
  }
  const n = Number(raw)
  if (!Number.isSafeInteger(n)) return Result.fail(`${show(raw)} is too large`)
  return Result.succeed(n)
}

/** A port in plain decimal digits, 1..65535. Port 0 (kernel's choice) is refused: say where. */
export const parsePort = (raw: string): Parsed<number> => {
  if (!/^\d{1,5}$/.test(raw)) return Result.fail(`port ${show(raw)} is not a number in 1..65535`)
  const port = Number(raw)
  if (port < 1 || port > 65_535) return Result.fail(`port ${port} is out of range 1..65535`)
  return Result.succeed(port)
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/
/** A host name (not all digits and dots, which would be a malformed IPv4 literal). */
export const isHostName = (host: string): boolean => HOSTNAME.test(host) && !/^[\d.]+$/.test(host)

const LISTEN_HINT = "(use host:port, e.g. 127.0.0.1:8080 or [::1]:8080)"

/**
 * `host:port` with an IPv4 literal or a host name, or `[v6]:port` with an IPv6 literal in
 * brackets. The host is returned without brackets. A missing host (`:8080`) is refused: binding
 * every interface must be written out (`0.0.0.0:8080` or `[::]:8080`), never implied.
 */
export const parseListen = (raw: string): Parsed<ListenAddress> => {
  const bracketed = /^\[([^\]]*)\]:([^:]*)$/.exec(raw)
  const plain = bracketed === null ? /^([^:[\]]*):([^:]*)$/.exec(raw) : null
  const host = bracketed?.[1] ?? plain?.[1]
  const portText = bracketed?.[2] ?? plain?.[2]
  if (host === undefined || portText === undefined) {
    return Result.fail(`${show(raw)} is not a listen address ${LISTEN_HINT}`)
  }
  if (host === "") return Result.fail(`${show(raw)} has no host ${LISTEN_HINT}`)
  const hostOk = bracketed !== null ? isIPv6(host) : isIPv4(host) || isHostName(host)
  if (!hostOk) return Result.fail(`${show(raw)} has an invalid host ${LISTEN_HINT}`)
  const port = parsePort(portText)
  if (Result.isFailure(port)) return Result.fail(`${show(raw)}: ${port.failure}`)
  return Result.succeed({ host, port: port.success })
}

/**
 * `parseListen`, plus `:port` for every interface: the spelling of `--https-listen :443` and
 * `--http-listen :80` (EDGE.md §1), listeners that exist to face the internet. The host comes back
 * as `""`.
 */
export const parseListenOrEvery = (raw: string): Parsed<ListenAddress> => {
  if (!raw.startsWith(":")) return parseListen(raw)
  const port = parsePort(raw.slice(1))
  return Result.isFailure(port) ? Result.fail(`${show(raw)}: ${port.failure}`) : Result.succeed({ host: "", port: port.success })
}

/** Most names in one certificate (Let's Encrypt's limit). */
export const MAX_DOMAINS = 100

/**
 * `--domain`: one or more DNS names, comma-separated. Lower-cased, a trailing dot dropped, each
 * kept once. IP literals and wildcards are refused: HTTP-01 proves control of a DNS name only.
 */
export const parseDomains = (raw: string): Parsed<ReadonlyArray<string>> => {
  const names: Array<string> = []
  for (const part of raw.split(",")) {
    const name = part.trim().toLowerCase().replace(/\.$/, "")
    if (name === "") return Result.fail(`${show(raw)} has an empty name`)
    if (isIPv4(name) || isIPv6(name) || /^\[.*\]$/.test(name)) {
      return Result.fail(`${show(name)} is an IP address (certificates here are for DNS names)`)
    }
    if (name.includes("*")) return Result.fail(`${show(name)} is a wildcard (HTTP-01 cannot prove a wildcard)`)
    if (!isHostName(name)) return Result.fail(`${show(name)} is not a DNS name`)
    if (!names.includes(name)) names.push(name)
  }
  if (names.length > MAX_DOMAINS) return Result.fail(`${names.length} names, at most ${MAX_DOMAINS}`)
  return Result.succeed(names)
}

/**
 * Whether `host` (as returned by `parseListen`) is a loopback IP literal: `127.x.y.z`, or `::1`
 * in any spelling. Names such as `localhost` are not literals and do not count: what they resolve
 * to is not ours to decide.
 */
export const isLoopbackLiteral = (host: string): boolean => {
  if (isIPv4(host)) return host.split(".")[0] === "127"
  if (isIPv6(host)) return new URL(`http://[${host}]/`).hostname === "[::1]"
  return false
}

/**
 * A duration the way `parseDuration` reads it back: `500ms`, `30s`, `2m`, `1m30s`, `0`. Used for
 * the defaults in `--help`, so the text shown is the value the code falls back to.
 */
export const formatDuration = (d: Duration.Duration): string => {
  let rest = Duration.toMillis(d)
  if (rest === 0) return "0"
  let text = ""
  for (const [unit, size] of [["h", 3_600_000], ["m", 60_000], ["s", 1_000], ["ms", 1]] as const) {
    const n = Math.floor(rest / size)
    if (n > 0) text += `${n}${unit}`
    rest -= n * size
  }
  return text
}

/** `host:port`, `[v6]:port`, or `:port` for every interface: the spelling `parseListenOrEvery` reads. */
export const formatListen = (address: ListenAddress): string =>
  `${isIPv6(address.host) ? `[${address.host}]` : address.host}:${address.port}`
