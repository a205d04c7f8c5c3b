-- KEYS[1] lock; ARGV[1] token, ARGV[2] lease ms, ARGV[3] channel. A lease made shorter is
-- announced, as a release is: waiters sleeping until the old end learn the new one.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local left = redis.call('PTTL', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if left > tonumber(ARGV[2]) then
  redis.call('PUBLISH', ARGV[3], '')
end
return 1
