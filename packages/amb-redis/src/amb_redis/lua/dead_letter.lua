-- ARGV: pattern, group, entry id, attempts, reason. Moves the entry, as received, to the
-- group's dead-letter stream with where it came from, the attempts and the reason, then
-- acknowledges it. Returns how many of the oldest dead letters the dead-letter stream's cap
-- dropped to make room (0 nearly always).
local pattern, group, id, attempts, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local stream = PREFIX .. 'stream:' .. pattern
local dlq = PREFIX .. 'dlq:' .. pattern .. ':' .. group
local data = ''
local e = redis.call('XRANGE', stream, id, id)
if #e > 0 and e[1][2] then
  local message = fields_of(e[1][2])['message']
  if message then data = message end
end
redis.call('XADD', dlq, '*', 'message', data, 'stream', stream, 'group', group, 'id', id,
  'attempts', attempts, 'reason', reason)
local dropped = redis.call('XTRIM', dlq, 'MAXLEN', '~', DEAD_LETTER_MAXLEN)
redis.call('XACK', stream, group, id)
redis.call('HDEL', attempts_key(pattern, group), id)
return dropped
