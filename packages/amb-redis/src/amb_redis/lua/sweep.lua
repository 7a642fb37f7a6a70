-- ARGV: now (s). Removes the groups whose deadline passed (see `sweep`).
return sweep(tonumber(ARGV[1]))
