/**
 * The scripts of a claim's life on one slot (SPEC §3.2–3.4, CLUSTER.md §3): claim, takeover (and
 * reclaim by epoch), release into grace, and the grace's expiry. The conventions all scripts
 * share are in `Scripts.ts`.
 */
import * as Redis from "effect/persistence/Redis"
import { INSTALL, NEW_EPOCH, NOW, TAKE_PHONES } from "./ScriptFragments.ts"

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
