/**
 * Every Redis key cluster mode uses (docs/cluster.md lists them with their values). A server-id's
 * keys carry it as a hash tag, `{sid}`, so both land in one Redis Cluster slot and every script
 * on a server-id touches keys of that one slot only. The node-level keys share the tag
 * `{nodes}`, so the lease script, which touches two of them, stays in one slot too; they are
 * never used in one script together with a server-id's keys.
 *
 * A server-id is attacker-chosen text. Inside a key it is only ever a value Redis compares byte
 * for byte; its `{`/`}` cannot break the tag out of anything but where Redis Cluster places the
 * key, and both keys of a server-id always agree on that (the whole key is built the same way).
 */
export interface ClusterKeys {
  /** HASH `state` (`live`|`grace`), `node`, `epoch`, `deadline` (ms, Redis time; grace only). */
  readonly server: (serverId: string) => string
  /** HASH conn_id → node id: the slot's phones, on every node (the cluster-wide cap). */
  readonly phones: (serverId: string) => string
  /** STRING with a PX TTL: a node's lease; its value is the process's boot token. */
  readonly node: (nodeId: string) => string
  /** HASH node id → 1: every node that ever held a lease and was not yet reaped. */
  readonly members: string
  /** SET of server-ids a node has claimed (an index for the reaper; the slot keys are the truth). */
  readonly claims: (nodeId: string) => string
  /** ZSET server-id → grace deadline (an index for the sweep of overdue graces). */
  readonly graces: string
}

export const clusterKeys = (prefix: string): ClusterKeys => ({
  server: (serverId) => `${prefix}:srv:{${serverId}}`,
  phones: (serverId) => `${prefix}:phones:{${serverId}}`,
  node: (nodeId) => `${prefix}:{nodes}:node:${nodeId}`,
  members: `${prefix}:{nodes}:members`,
  claims: (nodeId) => `${prefix}:{nodes}:claims:${nodeId}`,
  graces: `${prefix}:{nodes}:graces`
})
