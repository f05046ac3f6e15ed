/**
 * Typed failures of the routing path, as data. The phone forwarder's three end a phone's session:
 * each maps to one drop reason (`PhoneForwarder` `DROP_REASON`) and one close code (`PhoneSession`
 * `CLOSE_FOR`), both exhaustive by type. A registration's two close the phone 4404 / 4429.
 */
import * as Schema from "effect/Schema"

/** The phone's server-id has no binary entry (SPEC §3.6). */
export class NoServer extends Schema.TaggedError<NoServer>()("NoServer", {}) {}
/** The slot already has the maximum number of phones (SPEC §3.6). */
export class PhonesAtCap extends Schema.TaggedError<PhonesAtCap>()("PhonesAtCap", {}) {}

/**
 * Cluster mode: the shared registry (Redis) did not answer a claim or registration in time
 * (CLUSTER.md §8). The in-memory registry never fails this way.
 */
export class RegistryUnavailable extends Schema.TaggedError<RegistryUnavailable>()("RegistryUnavailable", {
  /** A short code (`ECONNREFUSED`, `deadline`, `not connected`, …), never a message text. */
  reason: Schema.String
}) {}

/** A phone sent something that is not JSON (SPEC §2.1). */
export class InvalidJson extends Schema.TaggedError<InvalidJson>()("InvalidJson", {
  /** Frames of this read batch not forwarded because of it (the invalid one and those after it). */
  frames: Schema.Number
}) {}
/** No live binary holds the phone's server-id when its frame arrived (absent or in grace). */
export class NoBinary extends Schema.TaggedError<NoBinary>()("NoBinary", { frames: Schema.Number }) {}
/** The binary's bounded write buffer (or the relay-wide budget) could not take the frame (SPEC §4.4). */
export class BinaryWriteFailed extends Schema.TaggedError<BinaryWriteFailed>()("BinaryWriteFailed", {
  frames: Schema.Number
}) {}

/** A write to a phone failed or made no progress in time (SPEC §4.3). */
export class PhoneWriteFailed extends Schema.TaggedError<PhoneWriteFailed>()("PhoneWriteFailed", {}) {}

/** A connection closed or failed while something waited on it. */
export class ConnectionLost extends Schema.TaggedError<ConnectionLost>()("ConnectionLost", {}) {}
