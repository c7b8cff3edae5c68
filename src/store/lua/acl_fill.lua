-- Caches what PostgreSQL said about one user's access to a thread, unless
-- the cache already reflects a newer membership change.
--
-- KEYS: 1 acl hash
-- ARGV: 1 version read from PostgreSQL, 2 owner ('' = none), 3 user field,
--       4 '1' member / '0' not, 5 TTL s
local cached = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local version = tonumber(ARGV[1])
if cached > version then
  return 0 -- a change newer than this read: drop the stale answer
end
if cached < version then
  redis.call('DEL', KEYS[1]) -- everything cached is older than this read
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'o', ARGV[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
