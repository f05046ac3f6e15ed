/**
 * Cluster settings (CLUSTER.md §1) from every source: `--cluster-redis`, `--node-id`,
 * `--cluster-prefix`, `--lease-ttl`, their variables, `layerConfig` and `make`. The Redis URL may
 * carry a password: no refusal, from any source, ever quotes it.
 */
import { assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { BootProcess } from "../../src/config/Production.ts"
import { describeRedisUrl } from "../../src/config/RedisUrl.ts"
import { RelayConfig } from "../../src/config/RelayConfig.ts"
import type { RelayConfigShape } from "../../src/config/RelayConfig.ts"
import { configOf, NO_CAPS, NON_ROOT, oneLine, refusalOf } from "../support/ConfigRun.ts"

const SECRET = "pa55-SECRET-d00d"
const asProcess = Effect.provideService(BootProcess, { uid: NON_ROOT, procStatus: NO_CAPS })
const refused = <A, E, R>(effect: Effect.Effect<A, E, R>) => effect.pipe(Effect.flip, Effect.map(oneLine))
const fromSettings = (settings: Record<string, unknown>) =>
  Effect.map(Layer.build(RelayConfig.layerConfig("relay")), (c) => Context.get(c, RelayConfig)).pipe(
    asProcess,
    Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromUnknown({ relay: settings }, { preserveEmptyStrings: true }))
  )
const make = (values: Partial<RelayConfigShape>) => RelayConfig.make(values).pipe(asProcess)

describe("cluster settings (CLUSTER.md §1)", () => {
  it.effect("single process by default; --cluster-redis turns cluster mode on with the documented defaults", () =>
    Effect.gen(function*() {
      assert.isUndefined((yield* configOf([])).cluster)
      const c = (yield* configOf(["--cluster-redis", `redis://app:${SECRET}@redis.internal:6380/2`])).cluster!
      assert.strictEqual(Redacted.value(c.redisUrl), `redis://app:${SECRET}@redis.internal:6380/2`)
      assert.match(c.nodeId, /^[0-9a-f]{12}$/)
      assert.strictEqual(c.prefix, "pyrycode-relay")
      assert.strictEqual(Duration.toMillis(c.leaseTtl), 15_000)
      // Two boots, two node ids.
      const other = (yield* configOf(["--cluster-redis", "redis://r:6379"])).cluster!
      assert.notStrictEqual(other.nodeId, c.nodeId)
      // The Redacted value never prints its password.
      assert.notInclude(String(c.redisUrl), SECRET)
      assert.notInclude(JSON.stringify({ url: c.redisUrl }), SECRET)
      assert.strictEqual(describeRedisUrl(c.redisUrl), "redis://app:***@redis.internal:6380/2")
    }))

  it.effect("every flag, and every variable", () =>
    Effect.gen(function*() {
      const flags = (yield* configOf([
        "--cluster-redis", "rediss://r.example:6379",
        "--node-id", "relay-a-1",
        "--cluster-prefix", "prod.relay",
        "--lease-ttl", "9s"
      ])).cluster!
      assert.deepStrictEqual(
        { nodeId: flags.nodeId, prefix: flags.prefix, lease: Duration.toMillis(flags.leaseTtl) },
        { nodeId: "relay-a-1", prefix: "prod.relay", lease: 9_000 }
      )
      const env = (yield* configOf([], {
        PYRYCODE_RELAY_CLUSTER_REDIS: "redis://r:6379",
        PYRYCODE_RELAY_NODE_ID: "b",
        PYRYCODE_RELAY_CLUSTER_PREFIX: "p",
        PYRYCODE_RELAY_LEASE_TTL: "1m"
      })).cluster!
      assert.deepStrictEqual({ nodeId: env.nodeId, prefix: env.prefix }, { nodeId: "b", prefix: "p" })
      assert.strictEqual(Duration.toMillis(env.leaseTtl), 60_000)
      const settings = (yield* fromSettings({ "cluster-redis": "redis://r:6379", "node-id": "c" })).cluster!
      assert.strictEqual(settings.nodeId, "c")
    }))

  it.effect("a bad URL is refused without ever quoting its password", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [string, string]> = [
        [`http://u:${SECRET}@h:6379`, `--cluster-redis: http://u:***@h:6379 is not a redis:// or rediss:// URL`],
        [`redis://u:${SECRET}@h:6379/x`, `--cluster-redis: redis://u:***@h:6379/x: the path must be a database number (/0../15)`],
        [`redis://u:${SECRET}@h:6379/0?x=1`, `--cluster-redis: redis://u:***@h:6379/0 has a query or fragment (not supported); use redis://[user:password@]host:port[/db] or rediss://…`],
        [`redis://u:${SECRET}@[bad`, `--cluster-redis: is not a URL (value withheld); use redis://[user:password@]host:port[/db] or rediss://…`],
        [`${SECRET}`, `--cluster-redis: is not a URL (value withheld); use redis://[user:password@]host:port[/db] or rediss://…`],
        ["", `--cluster-redis: is not a URL (value withheld); use redis://[user:password@]host:port[/db] or rediss://…`]
      ]
      for (const [url, expected] of cases) {
        const message = yield* refusalOf(["--cluster-redis", url])
        assert.strictEqual(message, expected)
        assert.notInclude(message, SECRET)
        assert.notInclude(yield* refusalOf([], { PYRYCODE_RELAY_CLUSTER_REDIS: url }), SECRET)
        assert.notInclude(yield* refused(fromSettings({ "cluster-redis": url })), SECRET)
      }
      const bad = { redisUrl: Redacted.make(`ftp://u:${SECRET}@h`), nodeId: "a", prefix: "p", leaseTtl: Duration.seconds(15) }
      const message = yield* refused(make({ cluster: bad }))
      assert.strictEqual(message, "cluster.redisUrl: ftp://u:***@h is not a redis:// or rediss:// URL")
      // A plain string where a Redacted belongs is refused without being quoted.
      const plain = yield* refused(make({ cluster: { ...bad, redisUrl: `redis://u:${SECRET}@h` as never } }))
      assert.strictEqual(plain, "cluster.redisUrl: must be a Redacted redis:// URL (value withheld)")
    }))

  it.effect("node id, prefix and lease rules; the cluster-only settings need --cluster-redis", () =>
    Effect.gen(function*() {
      const url = ["--cluster-redis", "redis://r:6379"]
      assert.strictEqual(yield* refusalOf([...url, "--node-id", "Node_A"]), "--node-id: \"Node_A\" is not 1 to 32 of a-z, 0-9 and -")
      assert.strictEqual(yield* refusalOf([...url, "--node-id", "a".repeat(33)]), `--node-id: "${"a".repeat(33)}" is not 1 to 32 of a-z, 0-9 and -`)
      assert.strictEqual(yield* refusalOf([...url, "--node-id", ""]), "--node-id: \"\" is not 1 to 32 of a-z, 0-9 and -")
      assert.strictEqual(yield* refusalOf([...url, "--cluster-prefix", "a{b}"]), "--cluster-prefix: \"a{b}\" is not 1 to 64 of A-Z, a-z, 0-9, ., _ and -")
      assert.strictEqual(yield* refusalOf([...url, "--lease-ttl", "2s"]), "--lease-ttl: must be at least 3s")
      assert.strictEqual(yield* refusalOf([...url, "--lease-ttl", "0"]), "--lease-ttl: must be longer than 0")
      assert.strictEqual(yield* refusalOf(["--node-id", "a"]), "--node-id needs --cluster-redis (cluster mode)")
      assert.strictEqual(yield* refusalOf(["--lease-ttl", "5s"]), "--lease-ttl needs --cluster-redis (cluster mode)")
      assert.strictEqual(
        yield* refusalOf([], { PYRYCODE_RELAY_CLUSTER_PREFIX: "x" }),
        "PYRYCODE_RELAY_CLUSTER_PREFIX needs --cluster-redis (cluster mode)"
      )
      assert.strictEqual(yield* refused(fromSettings({ "node-id": "a" })), "relay.node-id needs relay.cluster-redis (cluster mode)")
    }))
})
