-- After PostgreSQL COMMIT: flag bodies persisted and only now give them the
-- cache TTL; drop them from the thread's unpersisted set.
--
-- KEYS: triples (body, unpersisted zset, locator) per message
-- A: ttl s; L: one message id per triple. W.persisted: the body flag.
for i = 1, #L do
  local body, unp, loc = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  if redis.call('EXISTS', body) == 1 then
    redis.call('SETRANGE', body, 0, W.persisted)
    redis.call('EXPIRE', body, A.ttl)
  end
  redis.call('ZREM', unp, L[i])
  redis.call('EXPIRE', loc, A.ttl)
end
return #L
