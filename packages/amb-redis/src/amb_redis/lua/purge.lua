-- ARGV: pattern, group, now. Drops what waits for the group: entries it has not read, and
-- entries read and not acknowledged by a live member (handed back, or held by a member that
-- died). Returns how many.
local pattern, group, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local stream = PREFIX .. 'stream:' .. pattern
local h = group_info(stream, group)
if not h then return 0 end
local dropped = unread(stream, h)
redis.call('XGROUP', 'SETID', stream, group, '$')
local live = live_members(pattern, group, now)
local attempts = attempts_key(pattern, group)
local start = '-'
while true do
  local p = redis.call('XPENDING', stream, group, start, '+', 100)
  if #p == 0 then break end
  for _, e in ipairs(p) do
    if not live[e[2]] then
      redis.call('XACK', stream, group, e[1])
      redis.call('HDEL', attempts, e[1])
      dropped = dropped + 1
    end
  end
  start = '(' .. p[#p][1]
end
return dropped
