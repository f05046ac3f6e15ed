/**
 * What one connection's handler holds, from the gate to the end of its session (SPEC §7.2: the
 * cap slot is held for the handler's whole life): its connection-cap admission and, once
 * upgraded, its socket's entry in the drain list. `holding` releases both when the handler ends,
 * however it ends — a refusal, the session's end, a defect in the gate or the session, or
 * interruption at any point (the hand-over from gate to session is uninterruptible). No path
 * releases anything by hand: the gate only records what it took, in the same synchronous step
 * that took it.
 *
 * Why not an Effect `Scope` and `ConnectionCaps.acquireScoped`: what spans a session lives as
 * long as the connection. That design, built and measured, kept 565 B more per idle connection
 * than before (heap snapshots at 2 000 connections: the scope, its state, finalizer keys and
 * closures) — `bench/idle-memory.ts` 9.8 → 10.3 KB at 10 000, past the 10 KB target — against
 * 95 B for this object; and `Effect.scoped` around the gate kept the whole request head
 * reachable for the connection's life (13.7 KB). Here the gate is held only while it runs; what
 * lives as long as the session is the session effect, this object, and one finalizer made by
 * `releasing`, whose closure sees nothing but the hold.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type WebSocket from "ws"

/** A held admission (`ConnectionCaps`' `Admitted`): `release` is idempotent. */
export interface Releasable {
  readonly release: () => void
}

export class ConnectionHold {
  private admission: Releasable | undefined = undefined
  private socket: WebSocket | undefined = undefined
  private readonly sockets: Set<WebSocket>

  /** `sockets`: the drain list, which the upgraded socket joins until the handler ends. */
  constructor(sockets: Set<WebSocket>) {
    this.sockets = sockets
  }

  /** Records a slot just taken (call in the same synchronous step as `tryAcquire`). */
  admit(admission: Releasable): void {
    this.admission = admission
  }

  /** Puts the upgraded socket in the drain list until the handler ends. */
  track(ws: WebSocket): void {
    this.socket = ws
    this.sockets.add(ws)
  }

  /** Gives everything back; idempotent. */
  release(): void {
    const admission = this.admission
    const socket = this.socket
    this.admission = undefined
    this.socket = undefined
    if (socket !== undefined) this.sockets.delete(socket)
    admission?.release()
  }
}

/** Made at module level so the closure's context holds the hold and nothing else. */
const releasing = (hold: ConnectionHold) => (): Effect.Effect<void> => Effect.sync(() => hold.release())

/**
 * Runs `gate`, which records what it takes in `hold` and returns what runs next (a session, or
 * nothing after a refusal), then runs that; releases `hold` when it ends, whatever the exit.
 */
export const holding = <R, R2>(
  hold: ConnectionHold,
  gate: Effect.Effect<Effect.Effect<void, never, R2>, never, R>
): Effect.Effect<void, never, R | R2> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(
      Effect.exit(restore(gate)),
      (exit): Effect.Effect<void, never, R2> =>
        Exit.isSuccess(exit)
          ? Effect.onExit(restore(exit.value), releasing(hold))
          : Effect.andThen(releasing(hold)(), exit)
    )
  )
