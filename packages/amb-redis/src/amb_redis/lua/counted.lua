-- ARGV: topic, data. Publishes a request (see `publish`) and answers as publish.lua does, with
-- the exact number of AMB subscriptions that receive it instead: each live ungrouped one (it
-- listens to a channel RECEIVERS .. <its id> .. ':' .. <its pattern>, which PUBLISH's own count
-- cannot tell apart from its bus's other subscriptions) and each group registered on a matching
-- stream. For `gather`, which returns once that many have answered.
local topic = ARGV[1]
local _, full, route = publish(topic, ARGV[2])
local n = 0
for _, channel in ipairs(redis.call('PUBSUB', 'CHANNELS', RECEIVERS .. '*')) do
  local pattern = string.match(string.sub(channel, #RECEIVERS + 1), '^[^:]*:(.+)$')
  if pattern and matches(pattern, topic) then n = n + 1 end
end
for p in string.gmatch(route, '%S+') do
  local groups = redis.pcall('XINFO', 'GROUPS', PREFIX .. 'stream:' .. p)
  if not failed(groups) then n = n + #groups end
end
if full then return redis.error_reply('AMBFULL ' .. n .. ' ' .. full) end
return n
