-- ARGV: pattern, group, consumer, now, deadline. A member leaves: hand what it still holds to
-- the group (pending under RELEASED with a huge idle time, so the next XAUTOCLAIM by any member
-- takes it) and wake the other members. The group stays, keeping what is published for it until
-- a member joins again; if no live member is left it now lives until the deadline (group_expiry
-- from now). Returns the number of entries handed over.
local pattern, group, consumer, now, deadline = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local stream = PREFIX .. 'stream:' .. pattern
redis.call('HDEL', members_key(pattern, group), consumer)
if count(live_members(pattern, group, now)) == 0 and redis.call('HEXISTS', DEADLINES, pattern .. ' ' .. group) == 1 then
  redis.call('HSET', DEADLINES, pattern .. ' ' .. group, deadline)
end
local p = redis.pcall('XPENDING', stream, group, '-', '+', 100, consumer)
if failed(p) then return 0 end
local moved = 0
while #p > 0 do
  local args = {'XCLAIM', stream, group, RELEASED, 0}
  for _, e in ipairs(p) do args[#args + 1] = e[1] end
  args[#args + 1] = 'IDLE'
  args[#args + 1] = 1000000000
  args[#args + 1] = 'JUSTID'
  local claimed = redis.call(unpack(args))
  local got = {}
  for _, id in ipairs(claimed) do got[id] = true end
  for _, e in ipairs(p) do
    if not got[e[1]] then redis.call('XACK', stream, group, e[1]) end
  end
  moved = moved + #claimed
  p = redis.call('XPENDING', stream, group, '-', '+', 100, consumer)
end
redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
if moved > 0 then redis.call('PUBLISH', PREFIX .. 'wake:' .. pattern, 'claim') end
return moved
