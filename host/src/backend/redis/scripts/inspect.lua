-- KEYS[1] lock, KEYS[2] fence: what an operator's listing shows of one lock, read in one
-- step — the owner token (false when nobody holds it), the lease left in ms, the last fence,
-- and the server's clock in µs.
local token = redis.call('GET', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
local fence = redis.call('GET', KEYS[2]) or '0'
local now = redis.call('TIME')
return {token, left, fence, now[1] .. string.format('%06d', tonumber(now[2]))}
