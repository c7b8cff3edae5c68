-- Rebuilds a cold thread index from what PostgreSQL and the unpersisted set
-- held at read time, then marks it complete.
--
-- KEYS: 1 meta, 2 index
-- ARGV: 1 window, 2 cache TTL s, 3 message count at read time,
--       4 newest createdAt at read time (or '0'), 5 the meta generation read
--       with the unpersisted set, then score, id pairs
--
-- Returns the count, or -1 when the thread's state was invalidated
-- (reconcile, a PostgreSQL correction) since the read: the read may miss
-- what that invalidation was about, so it must not mark the index complete.
local meta, idx = KEYS[1], KEYS[2]
local window, ttl, count, seen = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
if tonumber(redis.call('HGET', meta, 'gen') or '0') ~= tonumber(ARGV[5]) then
  return -1
end
for i = 6, #ARGV, 2 do
  redis.call('ZADD', idx, ARGV[i], ARGV[i + 1])
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
