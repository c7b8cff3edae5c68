-- Rebuilds a cold thread index from what PostgreSQL and the unpersisted set
-- held at read time, then marks it complete.
--
-- KEYS: meta, index
-- A: window, ttl s (cache), count (messages at read time), seen (newest
--    createdAt at read time, or '0'), gen (the meta generation read with
--    the unpersisted set); L: score, id pairs
--
-- Returns the count, or -1 when the thread's state was invalidated
-- (reconcile, a PostgreSQL correction) since the read: the read may miss
-- what that invalidation was about, so it must not mark the index complete.
local meta, idx = KEYS[1], KEYS[2]
local window, ttl, count, seen = tonumber(A.window), A.ttl, tonumber(A.count), A.seen
if tonumber(redis.call('HGET', meta, 'gen') or '0') ~= tonumber(A.gen) then
  return -1
end
for i = 1, #L, 2 do
  redis.call('ZADD', idx, L[i], L[i + 1])
end
-- Saves that landed between the read and now are in the index already (every
-- save adds itself), and newer than what the read saw: count them in.
local newer = redis.call('ZCOUNT', idx, '(' .. seen, '+inf')
local card = redis.call('ZCARD', idx)
if card > window then
  redis.call('ZREMRANGEBYRANK', idx, 0, card - window - 1)
end
local last = tonumber(redis.call('HGET', meta, 'last') or '0')
local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
if top[2] and tonumber(top[2]) > last then last = tonumber(top[2]) end
if tonumber(seen) > last then last = tonumber(seen) end
redis.call('HSET', meta, 'win', '1', 'n', count + newer, 'last', string.format('%.0f', last))
redis.call('EXPIRE', idx, ttl)
redis.call('EXPIRE', meta, ttl)
return count + newer
