-- ARGV: pattern, group, consumer, count, entry id. The entries this consumer was given after
-- that id and has not acknowledged: after a lost connection, those of a read whose answer never
-- came. Returns {entries, failures of each entry}.
local pattern, group, consumer, count, after = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local stream = PREFIX .. 'stream:' .. pattern
local attempts = attempts_key(pattern, group)
local r = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, after)
if failed(r) then return r end
local entries = (r and r[1] and r[1][2]) or {}
local failures = {}
for i, e in ipairs(entries) do
  failures[i] = tonumber(redis.call('HGET', attempts, e[1]) or 0)
end
return {entries, failures}
