/**
 * Every metric of the relay (SPEC §8.2), in one module. Label values are constants: no series
 * ever carries a server-id, conn_id, token, IP, device name or anything a peer sent.
 *
 * One metric object per fixed label set, so hot paths never re-key attributes
 * (`withAttributes` views re-key on every update). Counters are `incremental: true`, or the
 * OpenTelemetry exporter would write them as TYPE gauge.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"

const counter = (name: string, description: string, attributes?: Record<string, string>) =>
  Metric.counter(name, { description, incremental: true, ...(attributes ? { attributes } : {}) })

const gauge = (name: string, description: string) => Metric.gauge(name, { description })

// --- frames -------------------------------------------------------------------------------------

const FRAMES_FORWARDED = "pyrycode_relay_frames_forwarded_total"
const FRAMES_FORWARDED_HELP = "Frames actually written to their sink, by direction."
export const framesForwardedPhoneToBinary = counter(FRAMES_FORWARDED, FRAMES_FORWARDED_HELP, {
  direction: "phone_to_binary"
})
export const framesForwardedBinaryToPhone = counter(FRAMES_FORWARDED, FRAMES_FORWARDED_HELP, {
  direction: "binary_to_phone"
})

const BYTES_FORWARDED = "pyrycode_relay_bytes_forwarded_total"
const BYTES_FORWARDED_HELP = "Bytes of frames actually written to their sink, by direction (envelope bytes towards binaries)."
export const bytesForwardedPhoneToBinary = counter(BYTES_FORWARDED, BYTES_FORWARDED_HELP, {
  direction: "phone_to_binary"
})
export const bytesForwardedBinaryToPhone = counter(BYTES_FORWARDED, BYTES_FORWARDED_HELP, {
  direction: "binary_to_phone"
})

/** Why a frame was not forwarded (SPEC §8.2). Each reason belongs to exactly one direction. */
export type DropReason =
  | "no_binary"
  | "invalid_json"
  | "binary_write_failed"
  | "malformed_envelope"
  | "unknown_conn_id"
  | "backlog_full"
  | "phone_write_failed"
  // Frames an outbox discarded because its phone was closed from outside or its session ended.
  | "evicted"
  | "grace_expired"
  | "shutdown"
  | "session_ended"

const dropDirection: Record<DropReason, "phone_to_binary" | "binary_to_phone"> = {
  no_binary: "phone_to_binary",
  invalid_json: "phone_to_binary",
  binary_write_failed: "phone_to_binary",
  malformed_envelope: "binary_to_phone",
  unknown_conn_id: "binary_to_phone",
  backlog_full: "binary_to_phone",
  phone_write_failed: "binary_to_phone",
  evicted: "binary_to_phone",
  grace_expired: "binary_to_phone",
  shutdown: "binary_to_phone",
  session_ended: "binary_to_phone"
}

const FRAMES_DROPPED = "pyrycode_relay_frames_dropped_total"
const FRAMES_DROPPED_HELP = "Frames not forwarded, by direction and reason."
export const framesDropped: Record<DropReason, Metric.Counter<number>> = Object.fromEntries(
  (Object.keys(dropDirection) as Array<DropReason>).map((reason) => [
    reason,
    counter(FRAMES_DROPPED, FRAMES_DROPPED_HELP, { direction: dropDirection[reason], reason })
  ])
) as Record<DropReason, Metric.Counter<number>>

// --- grace --------------------------------------------------------------------------------------

export const graceExpiries = counter(
  "pyrycode_relay_grace_expiries_total",
  "Graces that really evicted a slot (never reclaims, takeovers or stale fires)."
)
export const graceReclaims = counter(
  "pyrycode_relay_grace_reclaims_total",
  "Binaries that reclaimed a slot in grace."
)
export const takeovers = counter(
  "pyrycode_relay_takeovers_total",
  "Incumbent binaries replaced after failing the conflict liveness probe."
)

// --- connections --------------------------------------------------------------------------------

export const connectedBinaries = gauge(
  "pyrycode_relay_connected_binaries",
  "Held slots not in grace (same number as /healthz)."
)
export const connectedPhones = gauge("pyrycode_relay_connected_phones", "Registered phones.")
export const bufferedBytes = gauge(
  "pyrycode_relay_buffered_bytes",
  "Outbound bytes buffered relay-wide (phone outboxes and binary write buffers)."
)

export type Endpoint = "server" | "client"
export type UpgradeOutcome =
  | "accept"
  | "reject_headers"
  | "reject_409"
  | "reject_404"
  | "reject_429"
  | "reject_rate_limit"

const UPGRADE_OUTCOMES: ReadonlyArray<UpgradeOutcome> = [
  "accept",
  "reject_headers",
  "reject_409",
  "reject_404",
  "reject_429",
  "reject_rate_limit"
]
const UPGRADES = "pyrycode_relay_ws_upgrade_attempts_total"
const UPGRADES_HELP = "WebSocket upgrade requests by endpoint and terminal decision."
const upgradesFor = (endpoint: Endpoint) =>
  Object.fromEntries(
    UPGRADE_OUTCOMES.map((outcome) => [outcome, counter(UPGRADES, UPGRADES_HELP, { endpoint, outcome })])
  ) as Record<UpgradeOutcome, Metric.Counter<number>>
export const upgradeAttempts: Record<Endpoint, Record<UpgradeOutcome, Metric.Counter<number>>> = {
  server: upgradesFor("server"),
  client: upgradesFor("client")
}

export type RegisterFailureKind = "no_server" | "server_in_use" | "phones_at_cap" | "ratelimit"
const REGISTER_FAILURES = "pyrycode_relay_register_failures_total"
const REGISTER_FAILURES_HELP = "Registration failures by kind (co-incremented with the upgrade outcome)."
export const registerFailures: Record<RegisterFailureKind, Metric.Counter<number>> = {
  no_server: counter(REGISTER_FAILURES, REGISTER_FAILURES_HELP, { kind: "no_server" }),
  server_in_use: counter(REGISTER_FAILURES, REGISTER_FAILURES_HELP, { kind: "server_in_use" }),
  phones_at_cap: counter(REGISTER_FAILURES, REGISTER_FAILURES_HELP, { kind: "phones_at_cap" }),
  ratelimit: counter(REGISTER_FAILURES, REGISTER_FAILURES_HELP, { kind: "ratelimit" })
}

export type RejectReason = "conn_cap" | "per_ip_cap" | "handshake_timeout" | "draining" | "proxy_header"
const REJECTED = "pyrycode_relay_connections_rejected_total"
const REJECTED_HELP = "Connections refused before the WebSocket handshake, by reason."
export const connectionsRejected: Record<RejectReason, Metric.Counter<number>> = {
  conn_cap: counter(REJECTED, REJECTED_HELP, { reason: "conn_cap" }),
  per_ip_cap: counter(REJECTED, REJECTED_HELP, { reason: "per_ip_cap" }),
  handshake_timeout: counter(REJECTED, REJECTED_HELP, { reason: "handshake_timeout" }),
  draining: counter(REJECTED, REJECTED_HELP, { reason: "draining" }),
  // EDGE.md §3: a connection without an acceptable PROXY v2 header, closed with zero bytes written.
  proxy_header: counter(REJECTED, REJECTED_HELP, { reason: "proxy_header" })
}

// --- certificates (EDGE.md §1) -----------------------------------------------------------------

/** Refreshed from `Certificates` right before each scrape; 0 while no certificate is served. */
export const certificateExpiry = gauge(
  "pyrycode_relay_certificate_expiry_timestamp_seconds",
  "Expiry (Unix time) of the certificate being served in ACME mode; 0 until one exists."
)

export type OrderOutcome = "issued" | "failed"
const ORDERS = "pyrycode_relay_certificate_orders_total"
const ORDERS_HELP = "ACME certificate orders by outcome."
export const certificateOrders: Record<OrderOutcome, Metric.Counter<number>> = {
  issued: counter(ORDERS, ORDERS_HELP, { outcome: "issued" }),
  failed: counter(ORDERS, ORDERS_HELP, { outcome: "failed" })
}

// --- push wake (PUSH.md §4) ---------------------------------------------------------------------

/** `dropped` only for the rate limit and the in-flight cap; exactly one of the others per admitted wake. */
export type PushWakeOutcome = "dropped" | "sent" | "unregistered" | "token_fetch_failed" | "send_failed"
const PUSH_WAKES = "pyrycode_relay_push_wakes_total"
const PUSH_WAKES_HELP = "Push wakes by outcome: refused by the rate limit or in-flight cap, or how an admitted wake's send ended."
export const pushWakes: Record<PushWakeOutcome, Metric.Counter<number>> = {
  dropped: counter(PUSH_WAKES, PUSH_WAKES_HELP, { outcome: "dropped" }),
  sent: counter(PUSH_WAKES, PUSH_WAKES_HELP, { outcome: "sent" }),
  unregistered: counter(PUSH_WAKES, PUSH_WAKES_HELP, { outcome: "unregistered" }),
  token_fetch_failed: counter(PUSH_WAKES, PUSH_WAKES_HELP, { outcome: "token_fetch_failed" }),
  send_failed: counter(PUSH_WAKES, PUSH_WAKES_HELP, { outcome: "send_failed" })
}

// --- cluster mode (CLUSTER.md §4): created at 0 by the cluster layer, never in single-process mode ---

export const clusterRedisUp = gauge(
  "pyrycode_relay_cluster_redis_up",
  "1 while this node's Redis answers, else 0 (cluster mode)."
)

/** What a Redis call was for; every call that got no answer in time is counted under one of these. */
export const REDIS_OPS = [
  "connect",
  "health",
  "lease",
  "claim",
  "takeover",
  "release",
  "expire",
  "register",
  "unregister",
  "lookup",
  "sync",
  "index",
  "sweep",
  "reap",
  "publish",
  "ratelimit"
] as const
export type RedisOp = typeof REDIS_OPS[number]
const REDIS_ERRORS = "pyrycode_relay_cluster_redis_errors_total"
const REDIS_ERRORS_HELP = "Redis calls that failed or missed their deadline, by what they were for (cluster mode)."
export const clusterRedisErrors: Record<RedisOp, Metric.Counter<number>> = Object.fromEntries(
  REDIS_OPS.map((op) => [op, counter(REDIS_ERRORS, REDIS_ERRORS_HELP, { op })])
) as Record<RedisOp, Metric.Counter<number>>

const CLUSTER_MESSAGES = "pyrycode_relay_cluster_messages_total"
const CLUSTER_MESSAGES_HELP = "Cross-node messages published (out) and received (in) by this node (cluster mode)."
export const clusterMessages = {
  out: counter(CLUSTER_MESSAGES, CLUSTER_MESSAGES_HELP, { direction: "out" }),
  in: counter(CLUSTER_MESSAGES, CLUSTER_MESSAGES_HELP, { direction: "in" })
} as const

export type ClusterDropReason = "redis_down" | "node_gone" | "queue_full" | "stale_epoch"
const CLUSTER_DROPPED = "pyrycode_relay_cluster_frames_dropped_total"
const CLUSTER_DROPPED_HELP = "Cross-node frames dropped, by reason (cluster mode)."
export const clusterFramesDropped: Record<ClusterDropReason, Metric.Counter<number>> = {
  redis_down: counter(CLUSTER_DROPPED, CLUSTER_DROPPED_HELP, { reason: "redis_down" }),
  node_gone: counter(CLUSTER_DROPPED, CLUSTER_DROPPED_HELP, { reason: "node_gone" }),
  queue_full: counter(CLUSTER_DROPPED, CLUSTER_DROPPED_HELP, { reason: "queue_full" }),
  stale_epoch: counter(CLUSTER_DROPPED, CLUSTER_DROPPED_HELP, { reason: "stale_epoch" })
}

/** Connections refused (503 before the upgrade, or closed 1013 after it) because Redis did not answer. */
export const registryUnreachable = counter(REJECTED, REJECTED_HELP, { reason: "registry_unreachable" })

/** Creates every cluster series at 0; run by the cluster layer at boot. */
export const touchCluster: Effect.Effect<void> = Effect.forEach(
  [
    clusterRedisUp,
    ...Object.values(clusterRedisErrors),
    clusterMessages.out,
    clusterMessages.in,
    ...Object.values(clusterFramesDropped),
    registryUnreachable
  ] as ReadonlyArray<Metric.Metric<number, unknown>>,
  (metric) => Metric.update(metric, 0),
  { discard: true }
)

/** Every series, so boot can create each at 0 (series exist only after their first update). */
export const allCounters: ReadonlyArray<Metric.Counter<number>> = [
  framesForwardedPhoneToBinary,
  framesForwardedBinaryToPhone,
  bytesForwardedPhoneToBinary,
  bytesForwardedBinaryToPhone,
  ...Object.values(framesDropped),
  graceExpiries,
  graceReclaims,
  takeovers,
  ...Object.values(upgradeAttempts.server),
  ...Object.values(upgradeAttempts.client),
  ...Object.values(registerFailures),
  ...Object.values(connectionsRejected),
  ...Object.values(pushWakes),
  ...Object.values(certificateOrders)
]
export const allGauges: ReadonlyArray<Metric.Gauge<number>> = [
  connectedBinaries,
  connectedPhones,
  bufferedBytes,
  certificateExpiry
]

/** Creates every series at 0. Run once at boot, before the first scrape. */
export const touchAll: Effect.Effect<void> = Effect.forEach(
  [...allCounters, ...allGauges] as ReadonlyArray<Metric.Metric<number, unknown>>,
  (metric) => Metric.update(metric, 0),
  { discard: true }
)
