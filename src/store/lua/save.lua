-- Atomic save of one message: the whole write path in ONE round trip.
--
-- KEYS: 1 meta hash, 2 thread index zset, 3 unpersisted zset, 4 body,
--       5 idempotency key (ignored unless ARGV[3] == '1'), 6 persistence stream,
--       7 locator (message id -> thread id)
-- ARGV: 1 message id, 2 body JSON without "c", 3 has idempotency key,
--       4 idempotency TTL s, 5 index window, 6 cache TTL s, 7 pub/sub channel,
--       8 thread id, 9 body key prefix (for looking up an idempotent original),
--       10 '1' to refuse a keyed save on a cold thread,
--       11 backlog bound: refuse when the stream holds this many entries (0: none),
--       12 deadline, microseconds since the epoch: the caller stops waiting then
--
-- Returns {'ok', createdAt}, {'dup', original id, original body or false},
-- {'full'} (backlog at its bound: nothing stored), {'late'} (the deadline
-- passed: nothing stored), or {'cold'}: the thread's state is not in Redis (expired or lost), so an
-- unknown idempotency key may still be known to PostgreSQL; the caller
-- checks there and calls again with ARGV[10] = '0'.
-- A body is '0' (not yet persisted) or '1' (persisted) followed by JSON.
local meta, idx, unp, body, idem, stream, loc = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local id, json, has_key = ARGV[1], ARGV[2], ARGV[3] == '1'
local window, ttl = tonumber(ARGV[5]), ARGV[6]

-- A save that reaches Redis after its caller gave up (Redis was frozen, or
-- the request sat in a partitioned connection) must not be applied: the
-- caller has written it to PostgreSQL instead, with its own createdAt, and
-- a second copy would show up out of order until the persister replaced it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now > tonumber(ARGV[12]) then
  return {'late'}
end

-- Idempotent by message id: a retry of a call whose answer was lost finds
-- the message it stored and gets its createdAt back.
local stored = redis.call('GET', body)
if stored then
  return {'ok', string.match(stored, '"c":(%d+)')}
end

if has_key then
  local original = redis.call('GET', idem)
  if original then
    return {'dup', original, redis.call('GET', ARGV[9] .. original)}
  end
  if ARGV[10] == '1' and redis.call('EXISTS', meta) == 0 then
    return {'cold'}
  end
end

-- Backpressure: checked after the idempotency lookup, so a retry of a saved
-- message still gets its original. XLEN counts entries not yet acknowledged
-- (acknowledged ones are deleted).
local bound = tonumber(ARGV[11])
if bound > 0 and redis.call('XLEN', stream) >= bound then
  return {'full'}
end

-- createdAt: Redis TIME, forced strictly above the thread's previous value so
-- order is total even if the clock steps back. A cold thread (meta expired or
-- lost) never goes below its newest unpersisted message.
local m = redis.call('HMGET', meta, 'last', 'win')
local warm = m[1] ~= false
local last = tonumber(m[1] or '0')
if not warm then
  local top = redis.call('ZRANGE', unp, -1, -1, 'WITHSCORES')
  if top[2] then last = tonumber(top[2]) end
end
if now <= last then now = last + 1 end
local ts = string.format('%.0f', now)
-- Subscribers deliver straight from the event when 'prev' is the last
-- message they saw; '?' (cold meta) makes them re-read the gap instead.
local prev = '?'
if warm then prev = string.format('%.0f', last) end

local full = '0{"c":' .. ts .. ',' .. string.sub(json, 2)
redis.call('SET', body, full)
redis.call('ZADD', idx, now, id)
redis.call('ZADD', unp, now, id)
if m[2] == '1' then
  redis.call('HINCRBY', meta, 'n', 1)
else
  redis.call('HSET', meta, 'win', '0')
end
redis.call('HSET', meta, 'last', ts)
local card = redis.call('ZCARD', idx)
if card > window then
  redis.call('ZREMRANGEBYRANK', idx, 0, card - window - 1)
end
-- The index and meta are cache: they may expire. Unpersisted messages stay
-- reachable through the unpersisted set and the stream, which never expire.
redis.call('EXPIRE', idx, ttl)
redis.call('EXPIRE', meta, ttl)
if has_key then
  redis.call('SET', idem, id, 'EX', ARGV[4])
end
redis.call('SET', loc, ARGV[8])
redis.call('XADD', stream, '*', 'b', string.sub(full, 2))
redis.call('PUBLISH', ARGV[7], prev .. '|' .. full)
return {'ok', ts}
