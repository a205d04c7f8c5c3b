-- KEYS[1] lock; ARGV[1] channel: an operator's forced release. Frees the lock whoever holds
-- it and announces it, as an unlock does; the fence key stays, so the next grant's fence is
-- higher. Returns 1 if someone held it.
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('PUBLISH', ARGV[1], '')
  return 1
end
return 0
