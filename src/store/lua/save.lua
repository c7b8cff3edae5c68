-- Atomic save of one message: the whole write path in ONE round trip.
--
-- KEYS: meta hash, thread index zset, unpersisted zset, body, idempotency
--       key (unused without A.keyed), persistence stream, locator
-- A: id, thread, channel (pub/sub); the entry's `tail` (the entry is W.head
--    .. createdAt .. W.mid .. change sequence .. tail, in stream field
--    W.field; the body W.unpersisted .. entry; the event prev .. W.sep ..
--    body: formats and W from `store/wire.rs`); keyed '1' with an idempotency key,
--    key_ttl s; window (index size), ttl s (cache); refuse_cold '1' to
--    refuse a keyed save on a cold thread; backlog: refuse when the stream
--    holds this many entries (0: no bound); deadline µs since the epoch:
--    the caller stops waiting then.
--
-- Returns {'ok', createdAt, change sequence}, {'stored', body} (this id is stored already),
-- {'dup', original id} (the idempotency key was used), {'full'} (backlog at
-- its bound: nothing stored), {'late'} (the deadline passed: nothing
-- stored), or {'cold'}: the thread's state is not in Redis (expired or
-- lost), so an unknown idempotency key may still be known to PostgreSQL;
-- the caller checks there and calls again with refuse_cold '0'.
local meta, idx, unp, body, idem, stream, loc = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local keyed = A.keyed == '1'

-- A save that reaches Redis after its caller gave up (Redis was frozen, or
-- the request sat in a partitioned connection) must not be applied: the
-- caller has written it to PostgreSQL instead, with its own createdAt, and
-- a second copy would show up out of order until the persister replaced it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now > tonumber(A.deadline) then
  return {'late'}
end

-- Idempotent by message id: a retry of a call whose answer was lost finds
-- the message it stored (the caller reads its createdAt from the body).
local stored = redis.call('GET', body)
if stored then
  return {'stored', stored}
end

if keyed then
  local original = redis.call('GET', idem)
  if original then
    return {'dup', original}
  end
  if A.refuse_cold == '1' and redis.call('EXISTS', meta) == 0 then
    return {'cold'}
  end
end

-- Backpressure: checked after the idempotency lookup, so a retry of a saved
-- message still gets its original. XLEN counts entries not yet acknowledged
-- (acknowledged ones are deleted).
local bound = tonumber(A.backlog)
if bound > 0 and redis.call('XLEN', stream) >= bound then
  return {'full'}
end

-- createdAt: Redis TIME, forced strictly above the thread's previous value so
-- order is total even if the clock steps back. A cold thread (meta expired or
-- lost) never goes below its newest unpersisted message.
local m = redis.call('HMGET', meta, 'last', 'win', 'seq')
local warm = m[1] ~= false
local last = tonumber(m[1] or '0')
if not warm then
  local top = redis.call('ZRANGE', unp, -1, -1, 'WITHSCORES')
  if top[2] then last = tonumber(top[2]) end
end
if now <= last then now = last + 1 end
local ts = string.format('%.0f', now)
-- The change sequence: the same clock, strictly above the thread's last
-- change (edits and reactions take numbers too). Cold meta: `now` is above
-- every earlier number, all of which came from this clock.
local seq = now
local seq_last = tonumber(m[3] or '0')
if seq <= seq_last then seq = seq_last + 1 end
local sq = string.format('%.0f', seq)
-- Subscribers deliver straight from the event when 'prev' is the last
-- message they saw; W.prev_unknown (cold meta) makes them re-read the gap.
local prev = W.prev_unknown
if warm then prev = string.format('%.0f', last) end

local entry = W.head .. ts .. W.mid .. sq .. A.tail
local full = W.unpersisted .. entry
redis.call('SET', body, full)
redis.call('ZADD', idx, now, A.id)
redis.call('ZADD', unp, now, A.id)
if m[2] == '1' then
  redis.call('HINCRBY', meta, 'n', 1)
else
  redis.call('HSET', meta, 'win', '0')
end
redis.call('HSET', meta, 'last', ts, 'seq', sq)
local card = redis.call('ZCARD', idx)
if card > tonumber(A.window) then
  redis.call('ZREMRANGEBYRANK', idx, 0, card - tonumber(A.window) - 1)
end
-- The index and meta are cache: they may expire. Unpersisted messages stay
-- reachable through the unpersisted set and the stream, which never expire.
redis.call('EXPIRE', idx, A.ttl)
redis.call('EXPIRE', meta, A.ttl)
if keyed then
  redis.call('SET', idem, A.id, 'EX', A.key_ttl)
end
redis.call('SET', loc, A.thread)
redis.call('XADD', stream, '*', W.field, entry)
redis.call('PUBLISH', A.channel, prev .. W.sep .. full)
return {'ok', ts, sq}
