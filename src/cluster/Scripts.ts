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
 * Epochs are Redis's microsecond clock when the claim is made, kept strictly above the slot's
 * previous epoch: unique per claim, and a later claim has a larger epoch.
 */
import * as Redis from "effect/persistence/Redis"

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

const NEW_EPOCH = `
local function newEpoch(previous)
  local e = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local p = tonumber(previous)
  if p and e <= p then e = p + 1 end
  return string.format('%.0f', e)
end
`

/** Installs `node` as the live holder under `epoch`; `deadline` and any TTL go with the old hash. */
const INSTALL = `
local function install(node, epoch)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'state', 'live', 'node', node, 'epoch', epoch)
end
`

/** Removes the slot's phones (every node's) and returns them as conn_id, node, conn_id, node, … */
const TAKE_PHONES = `
local function takePhones(result)
  local phones = redis.call('HGETALL', KEYS[2])
  redis.call('DEL', KEYS[2])
  for i = 1, #phones do result[#result + 1] = phones[i] end
  return result
end
`

/**
 * First claim wins (SPEC §3.2). No slot → `claimed epoch`; in grace (on any node) → `reclaimed
 * epoch oldNode oldEpoch phones…` (the phones are removed); live → `conflict node epoch`.
 */
export const claim = Redis.script(
  (server: string, phones: string, node: string, notAfter: number) => [server, phones, node, notAfter],
  {
    numberOfKeys: 2,
    lua: `${NOW}${NEW_EPOCH}${INSTALL}${TAKE_PHONES}
if now > tonumber(ARGV[2]) then return {'late'} end
local slot = redis.call('HMGET', KEYS[1], 'state', 'node', 'epoch')
if slot[1] == 'live' then return {'conflict', slot[2], slot[3]} end
local epoch = newEpoch(slot[3])
install(ARGV[1], epoch)
if slot[1] == 'grace' then return takePhones({'reclaimed', epoch, slot[2], slot[3]}) end
redis.call('DEL', KEYS[2])
return {'claimed', epoch}
`
  }
).withReturnType<ReadonlyArray<string>>()

/**
 * Replaces the claim `expected` (live or in grace) by a new one of `node` (SPEC §3.3 takeover,
 * §3.4 reclaim of this node's own grace): `tookover epoch oldNode phones…`; any other epoch →
 * `superseded`; no slot → `missing`.
 */
export const takeover = Redis.script(
  (server: string, phones: string, node: string, expected: string, notAfter: number) => [server, phones, node, expected, notAfter],
  {
    numberOfKeys: 2,
    lua: `${NOW}${NEW_EPOCH}${INSTALL}${TAKE_PHONES}
if now > tonumber(ARGV[3]) then return {'late'} end
local slot = redis.call('HMGET', KEYS[1], 'state', 'node', 'epoch')
if not slot[1] then return {'missing'} end
if slot[3] ~= ARGV[2] then return {'superseded'} end
local epoch = newEpoch(slot[3])
install(ARGV[1], epoch)
return takePhones({'tookover', epoch, slot[2]})
`
  }
).withReturnType<ReadonlyArray<string>>()

/**
 * The binary of claim `epoch` on `node` left (SPEC §3.4): the slot enters grace until now +
 * `graceMs` (`grace deadline`); both keys also get a TTL of `graceMs + keepMs`, so a grace no node
 * is left to expire does not stay forever. Another claim's epoch → `stale`.
 */
export const release = Redis.script(
  (server: string, phones: string, node: string, epoch: string, graceMs: number, keepMs: number) => [
    server,
    phones,
    node,
    epoch,
    graceMs,
    keepMs
  ],
  {
    numberOfKeys: 2,
    lua: `${NOW}
local slot = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if slot[1] ~= ARGV[1] or slot[2] ~= ARGV[2] then return {'stale'} end
local deadline = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'state', 'grace', 'deadline', string.format('%.0f', deadline))
local ttl = tonumber(ARGV[3]) + tonumber(ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {'grace', string.format('%.0f', deadline)}
`
  }
).withReturnType<ReadonlyArray<string>>()

/**
 * The grace of claim `epoch` ran out (SPEC §3.4): removes the slot and its phones once —
 * `expired phones…` to exactly one caller in the whole cluster, which counts it. Before the
 * deadline → `notdue ms`; another claim's epoch → `stale`; no slot (expired by another node, or
 * lost with its keys) → `gone`. A slot still live under
 * `node` with that epoch (the holder's own release never reached Redis) expires at once.
 */
export const expire = Redis.script(
  (server: string, phones: string, node: string, epoch: string) => [server, phones, node, epoch],
  {
    numberOfKeys: 2,
    lua: `${NOW}${TAKE_PHONES}
local slot = redis.call('HMGET', KEYS[1], 'state', 'node', 'epoch', 'deadline')
if not slot[3] then return {'gone'} end
if slot[3] ~= ARGV[2] then return {'stale'} end
if slot[1] == 'grace' then
  local left = tonumber(slot[4]) - now
  if left > 0 then return {'notdue', string.format('%.0f', left)} end
elseif slot[2] ~= ARGV[1] then
  return {'stale'}
end
redis.call('DEL', KEYS[1])
return takePhones({'expired'})
`
  }
).withReturnType<ReadonlyArray<string>>()

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
