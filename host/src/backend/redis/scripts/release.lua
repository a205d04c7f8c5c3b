-- KEYS[1] lock; ARGV[1] token, ARGV[2] channel
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '')
  return 0
elseif holder then
  return 2
end
return 1
