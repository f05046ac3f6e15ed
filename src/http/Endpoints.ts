/**
 * The relay's WebSocket endpoints, `/v1/server` and `/v1/client`, as a Node `upgrade` listener
 * that does not care whose server it listens on: the relay's own listener (`PublicServer`) or an
 * application's (`ServerMount`). Each upgraded connection runs as a fiber in `sessions`; the
 * drain (SPEC §10) closes every registered connection 1001, waits up to the drain timeout for
 * the sessions to end, then destroys what is left.
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Http from "node:http"
import type * as Stream from "node:stream"
import { WebSocketServer } from "ws"
import type WebSocket from "ws"
import { Ledger } from "../connection/BufferLedger.ts"
import { RelayConfig } from "../config/RelayConfig.ts"
import * as CloseCodes from "../domain/CloseCodes.ts"
import { ConnectionCaps } from "../limits/ConnectionCaps.ts"
import { RateLimiter } from "../limits/RateLimiter.ts"
import { ConnectionWatcher } from "../liveness/ConnectionWatcher.ts"
import { makeGcHint, MinorGc } from "../node/GcHint.ts"
import { makeWsConnection } from "../node/WsConnection.ts"
import { checkWsInternals, type WsInternalsChanged } from "../node/WsInternals.ts"
import * as Log from "../observability/Log.ts"
import { Registry } from "../registry/Registry.ts"
import { Lifecycle } from "../lifecycle/Lifecycle.ts"
import * as Session from "../session/Session.ts"
import { makeAdmission } from "./Admission.ts"
import { ConnectionHold, holding } from "./ConnectionHold.ts"
import { endpointOf, pathOf } from "./UpgradeGate.ts"

export interface RelayEndpointsShape {
  /** Whether a request target is one of the relay's two WebSocket endpoints (exact path). */
  readonly owns: (url: string | undefined) => boolean
  /**
   * A Node `upgrade` listener: admits the request or answers it with a plain HTTP status
   * (404 for any path but the two endpoints). Never throws; the socket is the relay's from here.
   */
  readonly onUpgrade: (req: Http.IncomingMessage, socket: Stream.Duplex, head: Buffer) => void
  /** Runs a short effect in the relay's context; the drain waits for it like for a session. */
  readonly run: (effect: Effect.Effect<void>) => void
  /**
   * The drain: `/readyz` turns 503 and new upgrades get 503, `stopAccepting` runs, every
   * connection is closed 1001, sessions get up to the drain timeout, then the rest is destroyed.
   * Only the first call drains; later ones return at once.
   */
  readonly drain: (stopAccepting: Effect.Effect<void>) => Effect.Effect<void>
}

/** Socket errors end in `close`, which the session handles; one shared listener for all. */
const ignoreError = (): void => {}

export class RelayEndpoints extends Context.Service<RelayEndpoints, RelayEndpointsShape>()(
  "pyrycode-relay/RelayEndpoints"
) {
  static readonly layer: Layer.Layer<
    RelayEndpoints,
    WsInternalsChanged,
    RelayConfig | Registry | Ledger | Lifecycle | ConnectionWatcher | RateLimiter | ConnectionCaps
  > = Layer.effect(RelayEndpoints, Effect.suspend(() => make))
}

const make = Effect.gen(function*() {
  // Fail at boot, naming the ws version, if the ws internals the write path and the message
  // deadline use are not what this code expects.
  yield* checkWsInternals
  const config = yield* RelayConfig
  const registry = yield* Registry
  const ledger = yield* Ledger
  const lifecycle = yield* Lifecycle
  // The host's opt-in (the service entry): this relay's own count of bytes read.
  const gcHint = makeGcHint(yield* MinorGc)

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: config.maxFrameBytes,
    perMessageDeflate: false,
    // Never select a subprotocol, whatever the client offers (SPEC §1.2); `ws` would echo the
    // first one. With permessage-deflate off it selects no extension either.
    handleProtocols: () => false,
    clientTracking: false
  })
  /** Every upgraded socket, so the drain deadline can destroy the stragglers. */
  const sockets = new Set<WebSocket>()
  const sessions = yield* FiberSet.make<void>()
  const runSession = yield* FiberSet.runtime(sessions)<Session.SessionServices>()

  /**
   * One connection's session, in its own scope (the socket's close timer, the claim or
   * registration). The session closes its socket however it ends (1011 `internal error` on a
   * defect) and waits until it is gone, so no socket outlives its session and the drain, which
   * sees only running sessions, never misses one.
   */
  const session = (start: Session.SessionStart, ws: WebSocket): Effect.Effect<void, never, Session.SessionServices> =>
    Session.run(start, makeWsConnection(ws, { closeTimeout: config.closeTimeout, ledger, gcHint }))

  const admit = yield* makeAdmission(wss, session)

  const onUpgrade = (req: Http.IncomingMessage, socket: Stream.Duplex, head: Buffer): void => {
    socket.on("error", ignoreError)
    const hold = new ConnectionHold(sockets)
    runSession(holding(hold, admit(hold, req, socket, head)))
  }

  const drain = (stopAccepting: Effect.Effect<void>) =>
    Effect.gen(function*() {
      if (!(yield* lifecycle.startDraining)) return
      yield* Log.info("shutdown started")
      yield* stopAccepting
      yield* registry.closeAll(CloseCodes.ShuttingDown)
      const finished = yield* Effect.timeoutOption(FiberSet.awaitEmpty(sessions), config.drainTimeout)
      if (Option.isNone(finished)) {
        yield* Log.warn("drain incomplete", { duration: Duration.format(config.drainTimeout) })
        for (const ws of sockets) ws.terminate()
      }
      yield* Log.info("shutdown complete")
    })

  return RelayEndpoints.of({
    owns: (url) => endpointOf(pathOf(url)) !== undefined,
    onUpgrade,
    run: (effect) => {
      runSession(effect)
    },
    drain
  })
})
