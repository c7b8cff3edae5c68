-- A membership change committed in PostgreSQL with this version: forget
-- what was cached and refuse fills that read an older state.
--
-- KEYS: 1 acl hash
-- ARGV: 1 new version, 2 TTL s
local cached = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cached >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
