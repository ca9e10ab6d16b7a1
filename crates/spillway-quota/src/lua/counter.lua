-- spillway-quota counter mode: a fixed-window counter, the envoy-ratelimit baseline (the twin
-- of `counter_step` in counter.rs). One INCRBY per request on the key of the current window.
-- KEYS[1]  {spillway:<limit>:<key>}:counter — the prefix of the window keys. The script counts
--          in KEYS[1]:<window index>, a key it names from the server's clock: in KEYS[1]'s
--          hash tag, so on the same slot (the one key a script here does not get declared).
--          A window's key is never reused by another window, so a window starts from zero
--          exactly at its edge, whatever the expiry's timing.
-- ARGV[1]  limit (>= 1): permits per window
-- ARGV[2]  window in milliseconds (>= 1); windows are aligned on the Unix epoch of the Redis
--          server's clock (TIME), so every instance counts into the same window
-- ARGV[3]  cost (>= 1): permits this request takes
-- ARGV[4]  reserve (>= 0, at most limit - 1): permits this request's class must leave
-- Reply    {admitted (0|1), count in the window after this request, retry_after_ms
--          (-1: never), reset_after_ms (until the window ends)}
-- Writes   INCRBY <window key> cost; PEXPIREAT <window end + 1 s> when it created the key
--          (garbage collection only); a refusal takes its permits back (DECRBY), so it costs
--          the window nothing.
local limit = math.max(tonumber(ARGV[1]), 1)
local window = math.max(tonumber(ARGV[2]), 1)
local cost = math.max(tonumber(ARGV[3]), 1)
local reserve = math.min(math.max(tonumber(ARGV[4]), 0), limit - 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local index = math.floor(now / window)
local window_end = (index + 1) * window
local reset = window_end - now
local key = KEYS[1] .. ':' .. string.format('%.0f', index)
local allowed = limit - reserve
if cost > allowed then
  return {0, tonumber(redis.call('GET', key) or '0'), -1, reset}
end
local count = redis.call('INCRBY', key, cost)
if count == cost then
  redis.call('PEXPIREAT', key, string.format('%.0f', window_end + 1000))
end
if count > allowed then
  count = redis.call('DECRBY', key, cost)
  return {0, count, reset, reset}
end
return {1, count, 0, reset}
