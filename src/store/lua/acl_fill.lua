-- Caches what PostgreSQL said about one user's access to a thread, unless
-- the cache already reflects a newer membership change.
--
-- KEYS: acl hash
-- A: version (read from PostgreSQL), owner ('' = none), ttl s; with a
--    user: field (the user's) and member ('1' / '0')
local cached = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local version = tonumber(A.version)
if cached > version then
  return 0 -- a change newer than this read: drop the stale answer
end
if cached < version then
  redis.call('DEL', KEYS[1]) -- everything cached is older than this read
end
redis.call('HSET', KEYS[1], 'v', A.version, 'o', A.owner)
if A.field then
  redis.call('HSET', KEYS[1], A.field, A.member)
end
redis.call('EXPIRE', KEYS[1], A.ttl)
return 1
