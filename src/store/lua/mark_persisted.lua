-- After PostgreSQL COMMIT: flag bodies persisted and only now give them the
-- cache TTL; drop them from the thread's unpersisted set. Only where the
-- body is still the change that was persisted: a later change (an edit
-- made meanwhile) stays unpersisted until its own entry is.
--
-- KEYS: triples (body, unpersisted zset, locator) per message
-- A: ttl s; L: pairs (message id, the persisted entry) per triple.
-- W.persisted / W.unpersisted: the body flags.
for i = 1, #L / 2 do
  local body, unp, loc = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local id, entry = L[2 * i - 1], L[2 * i]
  local current = redis.call('GET', body)
  -- A body already flagged persisted (PostgreSQL's copy, put back after a
  -- conflict) has no unpersisted change either.
  local settled = current == false or string.sub(current, 1, 1) == W.persisted
  if settled or string.sub(current, 2) == entry then
    if current and not settled then
      redis.call('SETRANGE', body, 0, W.persisted)
      redis.call('EXPIRE', body, A.ttl)
    end
    redis.call('ZREM', unp, id)
    redis.call('EXPIRE', loc, A.ttl)
  end
end
return #L / 2
