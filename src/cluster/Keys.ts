/**
 * Every Redis key cluster mode uses (docs/cluster.md lists them with their values). A server-id's
 * keys carry it as a hash tag, `{sid}`, so both land in one Redis Cluster slot and every script
 * touches keys of one slot only; node keys stand alone and are never read by a script next to a
 * server-id's keys.
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
  /** STRING with a PX TTL: this node's lease; its value is the process's boot token. */
  readonly node: (nodeId: string) => string
}

export const clusterKeys = (prefix: string): ClusterKeys => ({
  server: (serverId) => `${prefix}:srv:{${serverId}}`,
  phones: (serverId) => `${prefix}:phones:{${serverId}}`,
  node: (nodeId) => `${prefix}:node:${nodeId}`
})
