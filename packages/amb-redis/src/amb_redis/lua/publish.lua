-- ARGV: topic, data. Publishes (see `publish`) and returns how many receive it, or, when a
-- group stream is full, the error "AMBFULL <count> <patterns>", on which publishers wait.
local n, full = publish(ARGV[1], ARGV[2])
if full then return redis.error_reply('AMBFULL ' .. n .. ' ' .. full) end
return n
