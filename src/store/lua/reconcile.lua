-- After a failover, PostgreSQL holds messages this thread's Redis state has
-- never seen: invalidate the index (reads rebuild it from PostgreSQL), raise
-- 'last' so new createdAt values stay above them, and restore idempotency keys.
--
-- KEYS: meta, then idempotency keys (one per L item), then the bodies of
--       the messages written in failover (cached copies a failover edit
--       made stale)
-- A: last (newest createdAt written in failover), seq (their highest change
--    sequence), key_ttl s; L: the message
--    id of each idempotency key
local meta = KEYS[1]
local last = tonumber(redis.call('HGET', meta, 'last') or '0')
local failover_last = tonumber(A.last)
if failover_last > last then last = failover_last end
local seq = tonumber(redis.call('HGET', meta, 'seq') or '0')
if tonumber(A.seq) > seq then seq = tonumber(A.seq) end
redis.call('HSET', meta, 'win', '0', 'last', string.format('%.0f', last), 'seq', string.format('%.0f', seq))
redis.call('HINCRBY', meta, 'gen', 1)
for i = 1, #L do
  redis.call('SET', KEYS[i + 1], L[i], 'NX', 'EX', A.key_ttl)
end
for i = #L + 2, #KEYS do
  redis.call('DEL', KEYS[i])
end
return 1
