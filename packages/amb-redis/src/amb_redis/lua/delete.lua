-- ARGV: pattern, group, now. Removes the group with its backlog unless it has live members
-- (then the error AMBINUSE <members>). Returns 1 if there was such a group, else 0.
local pattern, group, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local live = count(live_members(pattern, group, now))
if live > 0 and group_info(PREFIX .. 'stream:' .. pattern, group) then
  return redis.error_reply('AMBINUSE ' .. live)
end
return destroy(pattern, group)
