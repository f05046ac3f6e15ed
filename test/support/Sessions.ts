/**
 * Whole sessions over in-memory connections, with the relay's core services (registry, ledger,
 * lifecycle, connection watcher, default configuration), a metric registry of their own and
 * every log line captured. `TestClock` drives the probe, the grace and the heartbeat.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as References from "effect/References"
import type * as Scope from "effect/Scope"
import { Ledger } from "../../src/connection/BufferLedger.ts"
import type { PeerConnection } from "../../src/connection/PeerConnection.ts"
import { RelayConfig } from "../../src/config/RelayConfig.ts"
import { ConnectionWatcher } from "../../src/liveness/ConnectionWatcher.ts"
import { Registry } from "../../src/registry/Registry.ts"
import { Lifecycle } from "../../src/lifecycle/Lifecycle.ts"
import * as Session from "../../src/session/Session.ts"

const Core = Layer.mergeAll(Registry.layer, Ledger.layer, Lifecycle.layer, ConnectionWatcher.layer).pipe(
  Layer.provideMerge(RelayConfig.layerFromValues())
)
export type CoreServices = Layer.Success<typeof Core>

export interface Line {
  readonly message: unknown
  readonly level: string
  readonly fields: Record<string, unknown>
}

/** Runs `body` with the relay's core services, a metric registry of its own and every log line captured. */
export const withCore = <A, E>(body: (lines: Array<Line>) => Effect.Effect<A, E, CoreServices | Scope.Scope>) => {
  const lines: Array<Line> = []
  const capture = Logger.make(({ fiber, logLevel, message }) => {
    lines.push({
      message: Array.isArray(message) ? message[0] : message,
      level: logLevel,
      fields: { ...fiber.getRef(References.CurrentLogAnnotations) }
    })
  })
  return body(lines).pipe(
    Effect.provide(Core),
    Effect.provideService(Metric.MetricRegistry, new Map()),
    Effect.provideService(Logger.CurrentLoggers, new Set([capture]))
  )
}

/** One connection's session, as the public server runs it, in a fiber of its own. */
export const session = (conn: PeerConnection, start: Session.SessionStart) =>
  Effect.forkChild(Session.run(start, Effect.succeed(conn)))
export const binarySession = (conn: PeerConnection, serverId = "s") =>
  session(conn, { endpoint: "server", info: { serverId, version: "test" } })
export const phoneSession = (conn: PeerConnection, serverId = "s") =>
  session(conn, { endpoint: "client", info: { serverId, deviceName: undefined } })

/** The conn_id the registry issued to the phone registered last. */
export const lastConnId = (lines: ReadonlyArray<Line>): string => {
  const registered = lines.filter((l) => l.message === "phone registered")
  return registered[registered.length - 1]!.fields.conn_id as string
}

export const envelope = (connId: string, frame: string) => `{"conn_id":${JSON.stringify(connId)},"frame":${frame}}`

/** The close notice the binary gets when this phone ends on its own (SPEC §2.4). */
export const closeNotice = (connId: string, code: number) => `{"conn_id":"${connId}","close_code":${code}}`
