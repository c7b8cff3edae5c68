-- Answers a page from the thread index when the index is known to hold the
-- newest messages of the thread contiguously (meta win = 1) and covers the
-- requested range. Otherwise returns {'miss'} and the caller reads PostgreSQL
-- merged with the unpersisted set.
--
-- KEYS: meta, index
-- A: mode ('count' | 'offset' | 'range'); order ('asc' | 'desc') and limit
--    unless counting; offset mode: offset; range mode: after and before
--    scores, '' for no bound
-- Returns {'hit', total count, id...} or {'miss'}.
local meta, idx = KEYS[1], KEYS[2]
local m = redis.call('HMGET', meta, 'win', 'n')
if m[1] ~= '1' then return {'miss'} end
local n = tonumber(m[2] or '0')
local k = redis.call('ZCARD', idx)
local whole = (n == k)
local order, limit = A.order, tonumber(A.limit)
local ids

if A.mode == 'count' then
  return {'hit', n}
elseif A.mode == 'offset' then
  local offset = tonumber(A.offset)
  if order == 'desc' then
    if not whole and offset + limit > k then return {'miss'} end
    ids = redis.call('ZREVRANGE', idx, offset, offset + limit - 1)
  else
    local start = offset - (n - k)
    if start < 0 then return {'miss'} end
    ids = redis.call('ZRANGE', idx, start, start + limit - 1)
  end
else
  local after, before = A.after, A.before
  local lo, hi = '-inf', '+inf'
  if after ~= '' then lo = '(' .. after end
  if before ~= '' then hi = '(' .. before end
  local oldest = redis.call('ZRANGE', idx, 0, 0, 'WITHSCORES')
  local covers_after = whole or (after ~= '' and oldest[2] ~= nil and tonumber(after) >= tonumber(oldest[2]))
  if order == 'asc' then
    if not covers_after then return {'miss'} end
    ids = redis.call('ZRANGEBYSCORE', idx, lo, hi, 'LIMIT', 0, limit)
  else
    ids = redis.call('ZREVRANGEBYSCORE', idx, hi, lo, 'LIMIT', 0, limit)
    if #ids < limit and not covers_after then return {'miss'} end
  end
end
local out = {'hit', n}
for i = 1, #ids do out[#out + 1] = ids[i] end
return out
