-- After PostgreSQL COMMIT: flag bodies persisted and only now give them the
-- cache TTL; drop them from the thread's unpersisted set.
--
-- KEYS: triples (body, unpersisted zset, locator) per message
-- ARGV: 1 cache TTL s, then one message id per triple
local ttl = ARGV[1]
for i = 1, #ARGV - 1 do
  local body, unp, loc = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  if redis.call('EXISTS', body) == 1 then
    redis.call('SETRANGE', body, 0, '1')
    redis.call('EXPIRE', body, ttl)
  end
  redis.call('ZREM', unp, ARGV[i + 1])
  redis.call('EXPIRE', loc, ttl)
end
return #ARGV - 1
