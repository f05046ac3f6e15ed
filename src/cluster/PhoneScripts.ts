/**
 * The scripts of a slot's phones (SPEC §3.6, CLUSTER.md §2.2): registration under the cluster-wide
 * exact cap, and unregistration. The conventions all scripts share are in `Scripts.ts`.
 */
import * as Redis from "effect/persistence/Redis"

/**
 * A phone registers on the slot (SPEC §3.6) with the cluster-wide exact cap: no slot →
 * `noserver` (checked first); a different claim than `expected` (when given) → `moved epoch`;
 * the conn_id taken on another node → `duplicate`; `cap` phones already → `atcap`, after dropping
 * this node's entries that are not among `live` (left behind by an unregistration that never
 * reached Redis); else `ok epoch node`.
 */
export const register = Redis.script(
  (
    server: string,
    phones: string,
    connId: string,
    node: string,
    cap: number,
    expected: string,
    live: ReadonlyArray<string>
  ) => [server, phones, connId, node, cap, expected, ...live],
  {
    numberOfKeys: 2,
    lua: `
local slot = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if not slot[2] then return {'noserver'} end
if ARGV[4] ~= '' and slot[2] ~= ARGV[4] then return {'moved', slot[2]} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {'duplicate'} end
local cap = tonumber(ARGV[3])
if redis.call('HLEN', KEYS[2]) >= cap then
  local live = {}
  for i = 5, #ARGV do live[ARGV[i]] = true end
  local entries = redis.call('HGETALL', KEYS[2])
  for i = 1, #entries, 2 do
    if entries[i + 1] == ARGV[2] and not live[entries[i]] then redis.call('HDEL', KEYS[2], entries[i]) end
  end
  if redis.call('HLEN', KEYS[2]) >= cap then return {'atcap'} end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return {'ok', slot[2], slot[1]}
`
  }
).withReturnType<ReadonlyArray<string>>()

/** Removes this node's phone `connId` from the slot (no-op when it is gone or another node's). */
export const unregister = Redis.script(
  (phones: string, connId: string, node: string) => [phones, connId, node],
  {
    numberOfKeys: 1,
    lua: `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) return 1 end
return 0
`
  }
).withReturnType<number>()
