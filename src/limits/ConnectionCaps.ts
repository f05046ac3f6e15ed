/**
 * Connection slots (SPEC §7.2, §7.3): one global pool shared by both WebSocket paths, and at
 * most N live connections per source IP. Acquired before the handshake (after the rate limit),
 * held for the whole life of the connection, released when its handler ends.
 *
 * State ownership: the counters live in `makeCaps` and change only inside its synchronous
 * methods, so acquire and release are atomic with respect to other fibers. Invariants:
 * `total` equals the number of unreleased admissions, every per-IP entry is ≥ 1 (entries are
 * deleted at 0, so the map never outgrows the live connections), and their sum is ≤ `total`
 * (admissions without an IP count only globally).
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { RelayConfig } from "../config/RelayConfig.ts"

export type CapReason = "conn_cap" | "per_ip_cap"

export type Admission =
  /** `release` is idempotent: only its first call frees the slot. */
  | { readonly _tag: "Admitted"; readonly release: () => void }
  /** Answer 503; `reason` is the `connections_rejected_total` label. */
  | { readonly _tag: "Rejected"; readonly reason: CapReason }

export interface CapsOptions {
  /** Global cap, > 0. */
  readonly maxConnections: number
  /** Per-IP cap; 0 disables it. */
  readonly maxConnectionsPerIp: number
}

export interface Caps {
  /**
   * Takes a slot for a connection from `ip`. The global cap is checked first, so a full relay
   * reports `conn_cap` whoever asks. An `undefined` ip (only reachable with the rate limit off)
   * counts toward the global cap only.
   */
  readonly tryAcquire: (ip: string | undefined) => Admission
  /** Live admissions. */
  readonly active: () => number
  /** Live admissions of one IP. */
  readonly activeFor: (ip: string) => number
  /** Distinct IPs holding a slot (for tests: entries are deleted at 0). */
  readonly trackedIps: () => number
}

/** A held slot: a small object per connection (held for its whole life), its method shared. */
class Admitted {
  readonly _tag = "Admitted"
  private released = false
  private readonly free: (ip: string | undefined) => void
  private readonly ip: string | undefined
  constructor(free: (ip: string | undefined) => void, ip: string | undefined) {
    this.free = free
    this.ip = ip
  }
  release(): void {
    if (this.released) return
    this.released = true
    this.free(this.ip)
  }
}

/** The pure, synchronous core. */
export const makeCaps = (options: CapsOptions): Caps => {
  const { maxConnections, maxConnectionsPerIp } = options
  const perIp = new Map<string, number>()
  let total = 0

  const free = (ip: string | undefined): void => {
    total--
    if (ip === undefined || maxConnectionsPerIp <= 0) return
    const held = perIp.get(ip) ?? 0
    if (held <= 1) perIp.delete(ip)
    else perIp.set(ip, held - 1)
  }

  const tryAcquire = (ip: string | undefined): Admission => {
    if (total >= maxConnections) return { _tag: "Rejected", reason: "conn_cap" }
    const trackIp = ip !== undefined && maxConnectionsPerIp > 0
    if (trackIp) {
      const held = perIp.get(ip) ?? 0
      if (held >= maxConnectionsPerIp) return { _tag: "Rejected", reason: "per_ip_cap" }
      perIp.set(ip, held + 1)
    }
    total++
    return new Admitted(free, trackIp ? ip : undefined)
  }

  return {
    tryAcquire,
    active: () => total,
    activeFor: (ip) => perIp.get(ip) ?? 0,
    trackedIps: () => perIp.size
  }
}

export interface ConnectionCapsShape extends Caps {
  /**
   * `tryAcquire` whose release is a finalizer of the current scope: the slot is held exactly as
   * long as the connection handler's scope.
   */
  readonly acquireScoped: (ip: string | undefined) => Effect.Effect<Admission, never, Scope.Scope>
}

export const makeConnectionCaps = (options: CapsOptions): ConnectionCapsShape => {
  const caps = makeCaps(options)
  return ConnectionCaps.of({
    ...caps,
    acquireScoped: (ip) =>
      Effect.acquireRelease(
        Effect.sync(() => caps.tryAcquire(ip)),
        (admission) =>
          Effect.sync(() => {
            if (admission._tag === "Admitted") admission.release()
          })
      )
  })
}

export class ConnectionCaps extends Context.Service<ConnectionCaps, ConnectionCapsShape>()(
  "pyrycode-relay/ConnectionCaps"
) {
  /** From `maxConnections` / `maxConnectionsPerIp`. */
  static readonly layer = Layer.effect(
    ConnectionCaps,
    Effect.gen(function*() {
      const config = yield* RelayConfig
      return makeConnectionCaps({
        maxConnections: config.maxConnections,
        maxConnectionsPerIp: config.maxConnectionsPerIp
      })
    })
  )
}
