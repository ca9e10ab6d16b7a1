-- spillway-quota lease mode: record one instance's demand and return its grant, atomically
-- (the twin of `lease_grants` in fair.rs over the live instances, as `fleet_step` in store/memory.rs).
-- KEYS[1]  {spillway:<limit>:<key>}:lease — hash: instance id -> "<demand/s> <expiry ms>",
--          expiry in milliseconds since the Unix epoch of the Redis server's clock (TIME).
-- ARGV[1]  instance id
-- ARGV[2]  demand, permits per second (recent admitted + rejected, measured by the instance)
-- ARGV[3]  capacity, permits per second, for the whole fleet
-- ARGV[4]  lease TTL in milliseconds (>= 1)
-- Reply    {grant (string, %.17g), live instances including this one, total demand (string)}
-- Writes   HSET of this instance's entry, HDEL of expired entries, PEXPIRE of the hash to the
--          TTL (the hash disappears when every lease has lapsed).
local function clean(x)
  x = tonumber(x)
  if x == nil or x ~= x or x == math.huge or x < 0 then return 0 end
  return x
end
local me = ARGV[1]
local demand = clean(ARGV[2])
local capacity = tonumber(ARGV[3]) or 0
local ttl = math.max(tonumber(ARGV[4]) or 1, 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local wants = {}
local expired = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local id = entries[i]
  if id ~= me then
    local value = entries[i + 1]
    local sp = string.find(value, ' ', 1, true)
    local expiry = sp and tonumber(string.sub(value, sp + 1)) or 0
    if expiry > now then
      wants[#wants + 1] = clean(string.sub(value, 1, sp - 1))
    else
      expired[#expired + 1] = id
    end
  end
end
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
end
wants[#wants + 1] = demand
local mine = #wants
redis.call('HSET', KEYS[1], me, string.format('%.17g %.0f', demand, now + ttl))
redis.call('PEXPIRE', KEYS[1], ttl)

local n = #wants
local total = 0
for i = 1, n do total = total + wants[i] end
local grant = 0
if capacity == capacity and capacity > 0 and capacity < math.huge then
  -- Max-min fair share by water-filling (spillway_core::fair_share, all weights 1).
  local alloc = {}
  if total <= capacity then
    for i = 1, n do alloc[i] = wants[i] end
  else
    local order = {}
    for i = 1, n do order[i] = i end
    table.sort(order, function(a, b) return wants[a] < wants[b] end)
    local remaining = capacity
    for k = 1, n do
      local i = order[k]
      local per = remaining / (n - k + 1)
      if wants[i] <= per then
        alloc[i] = wants[i]
        remaining = math.max(remaining - wants[i], 0)
      else
        for j = k, n do
          alloc[order[j]] = math.min(per, wants[order[j]])
        end
        break
      end
    end
  end
  -- Spread what nobody asked for evenly, so the grants always sum to the capacity.
  local handed = 0
  for i = 1, n do handed = handed + alloc[i] end
  local leftover = capacity - handed
  grant = alloc[mine]
  if leftover > 0 then grant = grant + leftover / n end
end
return {string.format('%.17g', grant), n, string.format('%.17g', total)}
