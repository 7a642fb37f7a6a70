-- ARGV: now (s). Sweeps, then returns every group as {pattern, group, live members, backlog}.
local now = tonumber(ARGV[1])
sweep(now)
local out = {}
local deadlines = redis.call('HGETALL', DEADLINES)
for i = 1, #deadlines, 2 do
  local pattern, group = string.match(deadlines[i], '^(%S+) (%S+)$')
  if pattern then
    local stream = PREFIX .. 'stream:' .. pattern
    local h = group_info(stream, group)
    if h then
      out[#out + 1] = {pattern, group, count(live_members(pattern, group, now)), unread(stream, h) + h['pending']}
    end
  end
end
return out
