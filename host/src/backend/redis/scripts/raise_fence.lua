-- KEYS[1] lock, KEYS[2] fence; ARGV[1] token, ARGV[2] fence, ARGV[3] fence key TTL ms
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) > last then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
return 1
