-- ARGV: pattern, group, consumer, min idle (ms), count, cursor. Takes over entries another
-- consumer left pending for min idle ms (it died, or released them). A take-over is not an
-- attempt: the failures counted so far come with each entry.
-- Returns {next cursor, entries, failures of each entry}.
local pattern, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local stream = PREFIX .. 'stream:' .. pattern
local attempts = attempts_key(pattern, group)
local r = redis.pcall('XAUTOCLAIM', stream, group, consumer, ARGV[4], ARGV[6], 'COUNT', ARGV[5])
if failed(r) then return r end
local keep, failures = {}, {}
for _, e in ipairs(r[2]) do
  if type(e) == 'table' and e[2] then
    keep[#keep + 1] = e
    failures[#failures + 1] = tonumber(redis.call('HGET', attempts, e[1]) or 0)
  elseif type(e) == 'table' then
    redis.call('XACK', stream, group, e[1])
    redis.call('HDEL', attempts, e[1])
  end
end
if type(r[3]) == 'table' then
  for _, id in ipairs(r[3]) do redis.call('HDEL', attempts, id) end
end
return {r[1], keep, failures}
