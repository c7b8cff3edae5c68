-- Atomic change of one stored message (an edit): compare-and-set on the
-- exact body the caller decided on, a change sequence number, the new body,
-- a persistence Stream entry. ONE round trip, like a save.
--
-- KEYS: meta hash, body, unpersisted zset, persistence stream, locator
-- A: id, thread, created (createdAt µs, unchanged), tail (the entry is
--    W.head .. created .. W.mid .. change sequence .. tail; the body
--    W.unpersisted .. entry), replaced (the version it replaces, stream
--    field W.replaced), base (the exact body the caller read, '' when it
--    read PostgreSQL because Redis held none), backlog, deadline (as in
--    save.lua).
--
-- Returns {'ok', change sequence}, {'changed'} (the body is no longer
-- `base`: read again and decide again), {'full'} or {'late'} (nothing
-- stored).
local meta, body, unp, stream, loc = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now > tonumber(A.deadline) then
  return {'late'}
end
-- Compared byte for byte: the script never parses a body.
local current = redis.call('GET', body)
if (current or '') ~= A.base then
  return {'changed'}
end
local bound = tonumber(A.backlog)
if bound > 0 and redis.call('XLEN', stream) >= bound then
  return {'full'}
end

-- The thread's next change sequence: the clock, above the last one.
local seq = now
local seq_last = tonumber(redis.call('HGET', meta, 'seq') or '0')
if seq <= seq_last then seq = seq_last + 1 end
local sq = string.format('%.0f', seq)
-- Only a warm meta records it: creating meta here would make a cold thread
-- look warm to the save script's idempotency check.
if redis.call('EXISTS', meta) == 1 then
  redis.call('HSET', meta, 'seq', sq)
end

local entry = W.head .. A.created .. W.mid .. sq .. A.tail
-- Unpersisted again: no TTL until the persister has this change.
redis.call('SET', body, W.unpersisted .. entry)
redis.call('ZADD', unp, A.created, A.id)
redis.call('SET', loc, A.thread)
redis.call('XADD', stream, '*', W.field, entry, W.replaced, A.replaced)
return {'ok', sq}
