-- spillway-quota exact mode: one GCRA step, atomically (the twin of `gcra_step` in gcra.rs).
-- KEYS[1]  {spillway:<limit>:<key>}:gcra — the theoretical arrival time (TAT), integer
--          microseconds since the Unix epoch of the Redis server's clock (TIME), as a string.
-- ARGV[1]  emission interval in microseconds (>= 1): one permit every interval
-- ARGV[2]  burst (>= 1): permits a full bucket holds
-- ARGV[3]  cost (>= 1): permits this request takes
-- ARGV[4]  reserve (>= 0, at most burst - 1): whole permits this request's criticality class
--          must leave in the bucket (0 for CRITICAL and CRITICAL_PLUS by default)
-- Reply    {admitted (0|1), remaining, retry_after_us (-1: never), reset_after_us, blocked_us},
--          remaining, retry_after_us and blocked_us for the request's class
-- Writes   on admission only: SET KEYS[1] <new TAT> PX <until the bucket is full again>.
local interval = math.max(tonumber(ARGV[1]), 1)
local burst = math.max(tonumber(ARGV[2]), 1)
local cost = math.max(tonumber(ARGV[3]), 1)
local reserve = math.min(math.max(tonumber(ARGV[4] or '0'), 0), burst - 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then
  tat = math.max(tonumber(stored) or now, now)
end
-- How far ahead of now this class may push the TAT (the full bucket less its reserve).
local tau = interval * (burst - reserve)
local function remaining(at)
  return math.floor(math.max(tau - (at - now), 0) / interval)
end
local function blocked(at)
  return math.max(at + interval - tau - now, 0)
end
if cost > burst - reserve then
  return {0, remaining(tat), -1, tat - now, blocked(tat)}
end
local new_tat = tat + interval * cost
if new_tat - now > tau then
  return {0, remaining(tat), new_tat - tau - now, tat - now, blocked(tat)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
  math.max(math.ceil((new_tat - now) / 1000), 1))
return {1, remaining(new_tat), 0, new_tat - now, blocked(new_tat)}
