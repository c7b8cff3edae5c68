-- A membership change committed in PostgreSQL with this version: forget
-- what was cached and refuse fills that read an older state.
--
-- KEYS: acl hash
-- A: version (the new one), ttl s
local cached = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cached >= tonumber(A.version) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', A.version)
redis.call('EXPIRE', KEYS[1], A.ttl)
return 1
