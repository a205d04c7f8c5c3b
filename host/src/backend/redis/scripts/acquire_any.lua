-- KEYS: lock and fence of each permit, in pairs; ARGV[1] token, ARGV[2] lease ms, ARGV[3]
-- fence key TTL ms. The first free permit is taken as acquire.lua takes a lock.
local soonest = -2
for i = 1, #KEYS, 2 do
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    local now = redis.call('TIME')
    local clock_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
    local last = tonumber(redis.call('GET', KEYS[i + 1]) or '0')
    local fence = math.max(last + 1, clock_us)
    redis.call('SET', KEYS[i + 1], string.format('%.0f', fence), 'PX', ARGV[3])
    return {(i + 1) / 2, fence}
  end
  local left = redis.call('PTTL', KEYS[i])
  if left >= 0 and (soonest < 0 or left < soonest) then
    soonest = left
  end
end
return {0, soonest}
