-- KEYS[1] lock, KEYS[2] fence: what an operator's listing shows of one lock, read in one
-- step — the owner token (false when nobody holds it), the lease left in ms, the last fence,
-- and the server's clock in µs. Where either key holds a value of another type than
-- latchkey writes (someone else's key under latchkey's name), {false, -3, '', ''}.
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'string' and kind ~= 'none' then
    return {false, -3, '', ''}
  end
end
local token = redis.call('GET', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
local fence = redis.call('GET', KEYS[2]) or '0'
local now = redis.call('TIME')
return {token, left, fence, now[1] .. string.format('%06d', tonumber(now[2]))}
