/**
 * Every ownership transition as one Lua script (CLUSTER.md §3): Redis runs a script atomically,
 * so each is the cluster form of one `SlotTable` transition, and each compares the slot's epoch —
 * the identity of one claim — before it changes anything (compare-and-set). A script touches the
 * keys of one server-id only (`Keys.ts`), reads the time from Redis (`TIME`: one clock for every
 * node), and answers with a flat array of strings whose first element says what happened.
 *
 * Scripts that create ownership (claim, takeover) take a `notAfter` (Redis time, ms): a call
 * whose caller has already given up on its deadline may still reach Redis later (a stalled Redis
 * resumes and runs what was queued); such a script does nothing and answers `late`, so no claim
 * is ever created that its caller does not know of.
 *
 * Epochs are unique per claim, and a later claim has a larger epoch (`ScriptFragments.ts`, with
 * the other Lua pieces several scripts share).
 *
 * The scripts, by concern: a claim's life (`ClaimScripts.ts`), a slot's phones
 * (`PhoneScripts.ts`), a node's lease and what follows its lapse (`LeaseScripts.ts`).
 */
export * from "./ClaimScripts.ts"
export * from "./LeaseScripts.ts"
export * from "./PhoneScripts.ts"
