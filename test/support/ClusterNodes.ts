/**
 * Several relay processes as one cluster on one `redis-server` (CLUSTER.md §5): each a real
 * process started as `npm start` runs it, with its own node id, under one key prefix.
 */
import { metricValue } from "./ProxyClient.ts"
import { type RelayProcess, startTrackedRelay } from "./RelayProcess.ts"

export interface ClusterNode extends RelayProcess {
  readonly nodeId: string
  /** The cluster's `--cluster-prefix` (Redis keys start with it). */
  readonly prefix: string
}

let clusters = 0

/** `count` nodes `node-a`, `node-b`, … sharing `redisUrl` under a prefix of their own. */
export const startNodes = async (
  count: number,
  redisUrl: string,
  flags: ReadonlyArray<string> = []
): Promise<Array<ClusterNode>> => {
  const prefix = `cluster-${process.pid}-${++clusters}`
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const nodeId = `node-${String.fromCharCode(97 + i)}`
      const relay = await startTrackedRelay([
        "--cluster-redis",
        redisUrl,
        "--cluster-prefix",
        prefix,
        "--node-id",
        nodeId,
        ...flags
      ])
      return { ...relay, nodeId, prefix }
    })
  )
}

/** A metric summed over every node (cluster totals are sums: CLUSTER.md §2). */
export const clusterSum = async (nodes: ReadonlyArray<RelayProcess>, series: string): Promise<number> => {
  let sum = 0
  for (const node of nodes) {
    if (node.child.exitCode !== null || node.child.signalCode !== null) continue
    sum += (await metricValue(node.metricsUrl, series)) ?? 0
  }
  return sum
}
