-- ARGV: a length, patterns. Trims each pattern's stream that has at least that many entries
-- (see `trim`). Returns each stream's length afterwards.
local lengths = {}
local at_least = tonumber(ARGV[1])
for i = 2, #ARGV do
  local stream = PREFIX .. 'stream:' .. ARGV[i]
  local length = redis.call('XLEN', stream)
  if length >= at_least then length = trim(stream) end
  lengths[i - 1] = length
end
return lengths
