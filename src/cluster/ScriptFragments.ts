/**
 * The Lua pieces several ownership scripts share (`Scripts.ts`): Redis's clock (`TIME`, one clock
 * for every node), a new epoch strictly above the slot's previous one, installing a live holder,
 * and taking a slot's phones.
 *
 * Epochs are Redis's microsecond clock when the claim is made, kept strictly above the slot's
 * previous epoch: unique per claim, and a later claim has a larger epoch.
 */
export const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

export const NEW_EPOCH = `
local function newEpoch(previous)
  local e = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local p = tonumber(previous)
  if p and e <= p then e = p + 1 end
  return string.format('%.0f', e)
end
`

/** Installs `node` as the live holder under `epoch`; `deadline` and any TTL go with the old hash. */
export const INSTALL = `
local function install(node, epoch)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'state', 'live', 'node', node, 'epoch', epoch)
end
`

/** Removes the slot's phones (every node's) and returns them as conn_id, node, conn_id, node, … */
export const TAKE_PHONES = `
local function takePhones(result)
  local phones = redis.call('HGETALL', KEYS[2])
  redis.call('DEL', KEYS[2])
  for i = 1, #phones do result[#result + 1] = phones[i] end
  return result
end
`
