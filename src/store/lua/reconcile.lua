-- After a failover, PostgreSQL holds messages this thread's Redis state has
-- never seen: invalidate the index (reads rebuild it from PostgreSQL), raise
-- 'last' so new createdAt values stay above them, and restore idempotency keys.
--
-- KEYS: 1 meta, then one idempotency key per ARGV pair
-- ARGV: 1 newest createdAt written in failover, 2 idempotency TTL s,
--       then one message id per idempotency key
local meta = KEYS[1]
local last = tonumber(redis.call('HGET', meta, 'last') or '0')
local failover_last = tonumber(ARGV[1])
if failover_last > last then last = failover_last end
redis.call('HSET', meta, 'win', '0', 'last', string.format('%.0f', last))
redis.call('HINCRBY', meta, 'gen', 1)
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'NX', 'EX', ARGV[2])
end
return 1
