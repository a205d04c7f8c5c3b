-- KEYS the locks; ARGV token and lease ms of each, in turn: ARGV[2i-1], ARGV[2i] for KEYS[i]
local renewed = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[2 * i - 1] then
    renewed[i] = redis.call('PEXPIRE', key, ARGV[2 * i])
  else
    renewed[i] = 0
  end
end
return renewed
