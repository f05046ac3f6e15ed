/**
 * Cluster mode's connection to Redis (CLUSTER.md §1, §4, §8), against a real `redis-server`:
 * boot never waits for Redis longer than 5 s nor exits for it, `/readyz` and upgrades answer 503
 * while it does not answer and recover without a restart, the cluster series exist from boot,
 * and the URL's password is never written anywhere.
 */
import { afterEach, describe, expect, it } from "vitest"
import { dialBinary, dialPhone, eventually, sleep, upgradeStatus } from "../support/Peers.ts"
import { metricValue } from "../support/ProxyClient.ts"
import { redisForSuite, redisServerBinary, warnIfNoRedis } from "../support/RedisServer.ts"
import { freePort, killTracked, startTrackedRelay } from "../support/RelayProcess.ts"

warnIfNoRedis("cluster-redis.test.ts")

const PASSWORD = "s3cret-PASS-7f1c"

const readyz = async (httpUrl: string) => {
  const response = await fetch(`${httpUrl}/readyz`)
  return { status: response.status, body: await response.json() as { status: string } }
}

const binaryHeaders = (id: string) => ({ "X-Pyrycode-Server": id, "X-Pyrycode-Version": "1", "User-Agent": "t" })

describe.skipIf(redisServerBinary === undefined)("cluster mode: the Redis connection", () => {
  const redis = redisForSuite({ password: PASSWORD })
  afterEach(() => killTracked())

  it("boots ready with Redis up: node_id in /healthz, every cluster series at 0, no password anywhere", async () => {
    const relay = await startTrackedRelay(["--cluster-redis", redis().url, "--node-id", "node-a"])
    expect(await readyz(relay.httpUrl)).toEqual({ status: 200, body: { status: "ready" } })
    const health = await (await fetch(`${relay.httpUrl}/healthz`)).json() as Record<string, unknown>
    expect(Object.keys(health)).toEqual([
      "status",
      "version",
      "connected_binaries",
      "connected_phones",
      "uptime_seconds",
      "node_id"
    ])
    expect(health.node_id).toBe("node-a")
    const metrics = await (await fetch(relay.metricsUrl)).text()
    expect(await metricValue(relay.metricsUrl, "pyrycode_relay_cluster_redis_up")).toBe(1)
    for (const op of ["connect", "health"]) {
      expect(metrics).toContain(`pyrycode_relay_cluster_redis_errors_total{op="${op}"} 0`)
    }
    for (const direction of ["out", "in"]) {
      expect(metrics).toContain(`pyrycode_relay_cluster_messages_total{direction="${direction}"} 0`)
    }
    for (const reason of ["redis_down", "node_gone", "queue_full", "stale_epoch"]) {
      expect(metrics).toContain(`pyrycode_relay_cluster_frames_dropped_total{reason="${reason}"} 0`)
    }
    expect(metrics).toContain(`pyrycode_relay_connections_rejected_total{reason="registry_unreachable"} 0`)
    const started = relay.logs.find((l) => l.includes("relay started"))!
    const line = JSON.parse(started) as Record<string, unknown>
    expect(line.node_id).toBe("node-a")
    expect(line.cluster_redis).toBe(`redis://default:***@127.0.0.1:${redis().port}`)
    expect(line.cluster_prefix).toBe("pyrycode-relay")
    expect(line.lease_ttl).toBe("15s")

    const binary = await dialBinary(relay.url, "redis-up-1")
    const phone = await dialPhone(relay.url, "redis-up-1")
    phone.send(`{"hello":1}`)
    await binary.waitFor(1)
    phone.ws.close()
    binary.ws.close()
    await relay.stop()
    expect(relay.logs.join("\n")).not.toContain(PASSWORD)
    expect(metrics).not.toContain(PASSWORD)
  })

  it("a random 12-hex node id when none is given", async () => {
    const relay = await startTrackedRelay(["--cluster-redis", redis().url])
    const health = await (await fetch(`${relay.httpUrl}/healthz`)).json() as Record<string, unknown>
    expect(health.node_id).toMatch(/^[0-9a-f]{12}$/)
  })

  it("Redis unreachable at boot: starts within 5 s anyway, 503s until Redis answers, then recovers without a restart", async () => {
    const port = await freePort()
    const booted = Date.now()
    const relay = await startTrackedRelay(["--cluster-redis", `redis://default:${PASSWORD}@127.0.0.1:${port}`])
    expect(Date.now() - booted).toBeLessThan(9_000)
    expect(await readyz(relay.httpUrl)).toEqual({ status: 503, body: { status: "registry unreachable" } })
    expect((await fetch(`${relay.httpUrl}/healthz`)).status).toBe(200)
    expect(await upgradeStatus(`${relay.url}/v1/server`, binaryHeaders("unreachable-1"))).toBe(503)
    expect(await metricValue(relay.metricsUrl, "pyrycode_relay_cluster_redis_up")).toBe(0)
    expect(await metricValue(relay.metricsUrl, `pyrycode_relay_cluster_redis_errors_total{op="connect"}`)).toBeGreaterThan(0)
    expect(await metricValue(relay.metricsUrl, `pyrycode_relay_connections_rejected_total{reason="registry_unreachable"}`)).toBe(1)
    await sleep(2_500)
    // One line per outage, not one per reconnect attempt.
    expect(relay.logs.filter((l) => l.includes("cluster redis down"))).toHaveLength(1)

    // Redis comes up on that port: the same process turns ready.
    const late = await startRedisOn(port)
    try {
      await eventually(async () => (await readyz(relay.httpUrl)).status === 200, 8_000)
      expect(await metricValue(relay.metricsUrl, "pyrycode_relay_cluster_redis_up")).toBe(1)
      const binary = await dialBinary(relay.url, "unreachable-2")
      expect(binary.ws.readyState).toBe(binary.ws.OPEN)
      binary.ws.close()
      expect(relay.child.exitCode).toBeNull()
      await relay.stop()
      expect(relay.logs.join("\n")).not.toContain(PASSWORD)
    } finally {
      await late.stop()
    }
  }, 40_000)

  it("redis-server stopped (SIGSTOP): /readyz 503 within a few seconds, upgrades 503; SIGCONT: ready again", async () => {
    const relay = await startTrackedRelay(["--cluster-redis", redis().url])
    expect((await readyz(relay.httpUrl)).status).toBe(200)
    redis().pause()
    try {
      const paused = Date.now()
      await eventually(async () => (await readyz(relay.httpUrl)).status === 503, 6_000)
      expect(Date.now() - paused).toBeLessThan(5_000)
      expect(await upgradeStatus(`${relay.url}/v1/client`, {
        "X-Pyrycode-Server": "paused-1",
        "X-Pyrycode-Token": "t",
        "User-Agent": "t"
      })).toBe(503)
      expect(await metricValue(relay.metricsUrl, "pyrycode_relay_cluster_redis_up")).toBe(0)
    } finally {
      redis().resume()
    }
    await eventually(async () => (await readyz(relay.httpUrl)).status === 200, 6_000)
    expect(await metricValue(relay.metricsUrl, `pyrycode_relay_cluster_redis_errors_total{op="health"}`)).toBeGreaterThan(0)
  }, 30_000)

  it("a wrong password: never ready, never exits, never logs either password", async () => {
    const wrong = "WRONG-pw-19a2"
    const relay = await startTrackedRelay(["--cluster-redis", `redis://default:${wrong}@127.0.0.1:${redis().port}`])
    await sleep(1_500)
    expect((await readyz(relay.httpUrl)).status).toBe(503)
    expect(relay.child.exitCode).toBeNull()
    await relay.stop()
    const logs = relay.logs.join("\n")
    expect(logs).not.toContain(wrong)
    expect(logs).not.toContain(PASSWORD)
    expect(logs).toContain("cluster redis down")
  })
})

/** A passwordless redis-server on a given port (the "late" Redis of the boot test). */
const startRedisOn = async (port: number) => {
  const { spawn } = await import("node:child_process")
  const child = spawn(redisServerBinary!, ["--port", `${port}`, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", PASSWORD], {
    stdio: "ignore"
  })
  return {
    stop: async () => {
      if (child.exitCode !== null) return
      const exited = new Promise((r) => child.once("exit", r))
      child.kill("SIGKILL")
      await exited
    }
  }
}
