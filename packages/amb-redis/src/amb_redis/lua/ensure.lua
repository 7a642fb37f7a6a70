-- ARGV: pattern, group, consumer, now, the group's deadline, the consumer's, whether to count
-- the backlog. Creates the stream, the consumer group (reading only entries added from now on)
-- and the consumer, registers the pattern for publishers, and vouches for the group (it lives
-- until its deadline unless vouched for again) and for the consumer as a live member. A group
-- past its deadline that no sweep has removed yet is removed first: nobody joins an expired
-- backlog. Returns {1 if the group was created else 0, its backlog (0 unless asked)}.
local pattern, group, consumer, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local deadline, alive = tonumber(ARGV[5]), ARGV[6]
local stream = PREFIX .. 'stream:' .. pattern
local was = redis.call('HGET', DEADLINES, pattern .. ' ' .. group)
if was and tonumber(was) < now then destroy(pattern, group) end
local created = 1
local r = redis.pcall('XGROUP', 'CREATE', stream, group, '$', 'MKSTREAM')
if failed(r) then
  if not string.find(r.err, 'BUSYGROUP', 1, true) then return r end
  created = 0
end
redis.call('XGROUP', 'CREATECONSUMER', stream, group, consumer)
if redis.call('ZADD', GROUPS, 'GT', deadline, pattern) == 1 then routes_changed(pattern) end
if wildcard(pattern) and redis.call('SADD', WILDCARDS, pattern) == 1 then redis.call('DEL', ROUTES) end
redis.call('HSET', DEADLINES, pattern .. ' ' .. group, deadline)
redis.call('HSET', members_key(pattern, group), consumer, alive)
local backlog = 0
if ARGV[7] == '1' and created == 0 then
  local h = group_info(stream, group)
  if h then backlog = unread(stream, h) + h['pending'] end
end
return {created, backlog}
