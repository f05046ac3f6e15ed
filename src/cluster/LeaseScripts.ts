/**
 * The scripts of a node's lease and what follows its lapse (CLUSTER.md §2.6–2.8, §3): renewal and
 * resignation, the reaper's (a dead node's claims into grace, then its index forgotten), and the
 * re-assertion of a node's claims after its own lease lapsed or Redis came back empty. The
 * conventions all scripts share are in `Scripts.ts`.
 */
import * as Redis from "effect/persistence/Redis"
import { NOW } from "./ScriptFragments.ts"

/**
 * The node's lease (CLUSTER.md §3): held by this process's `token` → TTL renewed, `held`; absent
 * → taken again, `lost` (it had lapsed: the caller must check its claims, §7), and the node is
 * listed among the members the reaper watches; another token → `taken` (another process runs
 * with this node id).
 */
export const lease = Redis.script(
  (node: string, members: string, nodeId: string, token: string, ttlMs: number) => [node, members, nodeId, token, ttlMs],
  {
    numberOfKeys: 2,
    lua: `
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[2] then redis.call('PEXPIRE', KEYS[1], ARGV[3]) return 'held' end
if not holder then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[1], 1)
  return 'lost'
end
return 'taken'
`
  }
).withReturnType<string>()

/**
 * The reaper (CLUSTER.md §2.6): the slot's holder `node` is dead (its lease lapsed). A live claim
 * of that node enters grace until now + `graceMs` (`reaped epoch deadline`); one already in
 * grace stays as it is (`grace epoch deadline`); anything else is not that node's (`other`).
 */
export const reap = Redis.script(
  (server: string, phones: string, node: string, graceMs: number, keepMs: number) => [server, phones, node, graceMs, keepMs],
  {
    numberOfKeys: 2,
    lua: `${NOW}
local slot = redis.call('HMGET', KEYS[1], 'state', 'node', 'epoch', 'deadline')
if slot[2] ~= ARGV[1] then return {'other'} end
if slot[1] == 'grace' then return {'grace', slot[3], slot[4]} end
local deadline = string.format('%.0f', now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'state', 'grace', 'deadline', deadline)
local ttl = tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {'reaped', slot[3], deadline}
`
  }
).withReturnType<ReadonlyArray<string>>()

/** Drain: gives the lease up (only this process's own). */
export const resign = Redis.script(
  (node: string, token: string) => [node, token],
  {
    numberOfKeys: 1,
    lua: `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
`
  }
).withReturnType<number>()

/**
 * Re-assertion (CLUSTER.md §2.7–2.8): after this node's lease lapsed, or Redis came back empty,
 * the node states each claim it still holds — `epoch`, `live` or `grace` (with `graceLeftMs`),
 * its phones here. The slot holds that epoch → `held` (its state and this node's phones are
 * written back); no slot, or an older epoch → `restored` (this claim replaces it); a newer epoch
 * → `lost node epoch`: another claim won meanwhile, and this node's binary and phones of the slot
 * must be closed as in a takeover.
 */
export const assertClaim = Redis.script(
  (
    server: string,
    phones: string,
    node: string,
    epoch: string,
    state: "live" | "grace",
    graceLeftMs: number,
    keepMs: number,
    live: ReadonlyArray<string>
  ) => [server, phones, node, epoch, state, graceLeftMs, keepMs, ...live],
  {
    numberOfKeys: 2,
    lua: `${NOW}
local slot = redis.call('HMGET', KEYS[1], 'state', 'node', 'epoch')
local current = tonumber(slot[3])
if current and current > tonumber(ARGV[2]) then return {'lost', slot[2], slot[3]} end
local answer = 'held'
if slot[3] ~= ARGV[2] then
  answer = 'restored'
  redis.call('DEL', KEYS[1], KEYS[2])
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'node', ARGV[1], 'epoch', ARGV[2])
for i = 6, #ARGV do redis.call('HSET', KEYS[2], ARGV[i], ARGV[1]) end
if ARGV[3] == 'grace' then
  redis.call('HSET', KEYS[1], 'deadline', string.format('%.0f', now + tonumber(ARGV[4])))
  local ttl = tonumber(ARGV[4]) + tonumber(ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('HDEL', KEYS[1], 'deadline')
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
return {answer}
`
  }
).withReturnType<ReadonlyArray<string>>()

/**
 * The reaper is done with a dead node: its claims index and its membership go — unless the node
 * came back meanwhile (its lease is there again), which lists it anew.
 */
export const forget = Redis.script(
  (node: string, members: string, claims: string, nodeId: string) => [node, members, claims, nodeId],
  {
    numberOfKeys: 3,
    lua: `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`
  }
).withReturnType<number>()
