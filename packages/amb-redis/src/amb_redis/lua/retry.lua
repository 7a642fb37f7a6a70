-- ARGV: pattern, group, consumer, entry id. After a handler failed: count the failure and
-- redeliver the entry to the same consumer (XCLAIM also resets its idle time, so nobody takes
-- it over meanwhile). Returns {entry, failures so far}, or 0 when it is no longer this
-- consumer's (another member took it over) or no longer exists.
local pattern, group, consumer, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local stream = PREFIX .. 'stream:' .. pattern
local attempts = attempts_key(pattern, group)
local p = redis.pcall('XPENDING', stream, group, id, id, 1)
if failed(p) or #p == 0 or p[1][2] ~= consumer then return 0 end
local e = redis.call('XCLAIM', stream, group, consumer, 0, id)
if #e == 0 or not e[1] or not e[1][2] then
  redis.call('XACK', stream, group, id)
  redis.call('HDEL', attempts, id)
  return 0
end
return {e[1], redis.call('HINCRBY', attempts, id, 1)}
