/**
 * Asks V8 for a young-generation collection after every 8 MiB the relay has read, when the host
 * opts in by providing `MinorGc` (the service entry does, with the `gc` that `node --expose-gc`
 * exposes, as `npm start` runs it); a library user's process is never collected unasked.
 *
 * Why: the relay makes almost no heap garbage per frame, but every socket read and every
 * multi-chunk message is a buffer outside the heap, and V8 frees those only when it collects the
 * object that holds them. Its young generation fills (and is collected) by heap allocation only,
 * so with large frames the dead buffers piled up to V8's external-memory limit (64 MB) and were
 * freed by full mark-compacts instead — measured at 64 KiB frames: 1.8x the CPU per round trip
 * and 3x the page faults (the allocator returned the memory and took it back every cycle). A
 * minor collection every 8 MiB read keeps them young and the memory warm; it runs as a task
 * (`execution: "async"`), never inside a read.
 */
import * as Context from "effect/Context"

const EVERY_BYTES = 8 * 1024 * 1024

/** V8's `gc` (as `--expose-gc` exposes it on `globalThis`), called only with these options. */
export type Gc = (options: { readonly type: "minor"; readonly execution: "async" }) => void

export interface GcHint {
  /** Counts bytes read; asks for a collection each time another `every` bytes were read. */
  readonly read: (bytes: number) => void
}

export const makeGcHint = (gc: Gc | undefined, every = EVERY_BYTES): GcHint => {
  if (gc === undefined) return { read: () => {} }
  let sinceLast = 0
  return {
    read: (bytes) => {
      sinceLast += bytes
      if (sinceLast < every) return
      sinceLast = 0
      gc({ type: "minor", execution: "async" })
    }
  }
}

/**
 * The collector a relay may call; `undefined` (the default) means never. Each relay counts its
 * own reads (`makeGcHint` per relay), so two relays in one process share nothing here.
 */
export const MinorGc = Context.Reference<Gc | undefined>("pyrycode-relay/MinorGc", {
  defaultValue: () => undefined
})

/** `gc` when the process runs with `--expose-gc`, else `undefined`. */
export const exposedGc = (): Gc | undefined => (globalThis as { gc?: Gc }).gc
