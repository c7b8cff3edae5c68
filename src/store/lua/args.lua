-- Prelude of every script (see `store/redis/script.rs`): named inputs.
-- ARGV = count, then `count` name/value pairs (into A), then a list (into L).
local A, L = {}, {}
do
  local named = tonumber(ARGV[1])
  for i = 2, 2 * named, 2 do A[ARGV[i]] = ARGV[i + 1] end
  for i = 2 * named + 2, #ARGV do L[#L + 1] = ARGV[i] end
end
