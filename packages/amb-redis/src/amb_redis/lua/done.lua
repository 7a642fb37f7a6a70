-- ARGV: pattern, group, entry id. Acknowledges an entry that had failed before, and forgets
-- its failures.
local pattern, group, id = ARGV[1], ARGV[2], ARGV[3]
redis.call('XACK', PREFIX .. 'stream:' .. pattern, group, id)
redis.call('HDEL', attempts_key(pattern, group), id)
return 1
