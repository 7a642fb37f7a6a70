-- Shared by every script: loaded after the settings amb_redis._scripts puts first, as Lua
-- locals: PREFIX (every key AMB uses starts with it), MAXLEN (``stream_maxlen``),
-- DEAD_LETTER_MAXLEN (``dead_letter_maxlen``) and MAX_ROUTES (cached routes kept at most).
-- Keys are built from PREFIX, so the scripts need a standalone Redis (or a single shard), not
-- Redis Cluster.
--
-- Shared helpers. `match` is the AMQP rule of amb_core.adapter.topic_matches, on segments: `*` is exactly
-- one segment, `#` zero or more; `matches` adds its other rule: a pattern that starts with a
-- wildcard never matches the bus's own topics (reply inboxes, under `_amb.`).
local GROUPS = PREFIX .. 'groups'
local ROUTES = PREFIX .. 'routes'
local DEADLINES = PREFIX .. 'deadlines'
local WILDCARDS = PREFIX .. 'wildcards'
local RELEASED = '_released'
local RECEIVERS = PREFIX .. 'sub:'

local function segments(s)
  local t = {}
  for x in string.gmatch(s, '[^.]+') do t[#t + 1] = x end
  return t
end

local function match(p, i, t, j)
  while i <= #p do
    local s = p[i]
    if s == '#' then
      if i == #p then return true end
      for k = j, #t + 1 do
        if match(p, i + 1, t, k) then return true end
      end
      return false
    end
    if j > #t or (s ~= '*' and s ~= t[j]) then return false end
    i = i + 1
    j = j + 1
  end
  return j > #t
end

local function matches(pattern, topic)
  local p = segments(pattern)
  if (p[1] == '*' or p[1] == '#') and string.sub(topic, 1, 5) == '_amb.' then return false end
  return match(p, 1, segments(topic), 1)
end

local function failed(r)
  return type(r) == 'table' and r.err ~= nil
end

local function wildcard(pattern)
  return string.find(pattern, '[*#]') ~= nil
end

-- A pattern with groups came or went: an exact one changes only its own topic's cached route,
-- a wildcard one any route.
local function routes_changed(pattern)
  if wildcard(pattern) then
    redis.call('DEL', ROUTES)
  else
    redis.call('HDEL', ROUTES, pattern)
  end
end

-- Unregisters a pattern that has no group left.
local function unregister(pattern)
  redis.call('ZREM', GROUPS, pattern)
  redis.call('SREM', WILDCARDS, pattern)
  routes_changed(pattern)
end

local function fields_of(list)
  local h = {}
  for i = 1, #list, 2 do h[list[i]] = list[i + 1] end
  return h
end

-- Failed handler calls per entry of one group (only entries that failed have one).
local function attempts_key(pattern, group)
  return PREFIX .. 'attempts:' .. pattern .. ':' .. group
end

-- Whether stream entry id a is older than b.
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end

-- Drops the entries every group of the stream has acknowledged (older than each group's
-- oldest pending entry and than its last-delivered-id), and nothing else: no length cap ever
-- drops an entry a group still needs. Returns the length left: the backlog (of its slowest
-- group).
local function trim(stream)
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if failed(groups) then return 0 end -- no such stream
  if #groups == 0 then
    -- Nobody needs these: a group created later starts at the end ('$').
    redis.call('XTRIM', stream, 'MAXLEN', 0)
    return 0
  end
  local keep = nil
  for _, g in ipairs(groups) do
    local h = fields_of(g)
    local first = h['last-delivered-id']
    if h['pending'] > 0 then
      local p = redis.call('XPENDING', stream, h['name'])
      if p[2] and older(p[2], first) then first = p[2] end
    end
    if keep == nil or older(first, keep) then keep = first end
  end
  redis.call('XTRIM', stream, 'MINID', keep)
  return redis.call('XLEN', stream)
end

-- Consumer -> time (s) until which it counts as a live member (it vouches every claim_idle / 2).
local function members_key(pattern, group)
  return PREFIX .. 'members:' .. pattern .. ':' .. group
end

local function live_members(pattern, group, now)
  local live = {}
  local all = redis.call('HGETALL', members_key(pattern, group))
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) >= now then live[all[i]] = true end
  end
  return live
end

local function count(set)
  local n = 0
  for _ in pairs(set) do n = n + 1 end
  return n
end

-- XINFO GROUPS' fields of one group (nil: no such group).
local function group_info(stream, group)
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if failed(groups) then return nil end
  for _, g in ipairs(groups) do
    local h = fields_of(g)
    if h['name'] == group then return h end
  end
  return nil
end

-- Entries not handled yet: not yet read by the group, or read and not acknowledged.
local function unread(stream, h)
  local lag = h['lag']
  if not lag then lag = #redis.call('XRANGE', stream, '(' .. h['last-delivered-id'], '+') end
  return lag
end

-- Removes a group with its backlog, and the stream with its registration once it has no group
-- left. Returns 1 if there was such a group.
local function destroy(pattern, group)
  local stream = PREFIX .. 'stream:' .. pattern
  local r = redis.pcall('XGROUP', 'DESTROY', stream, group)
  redis.call('DEL', attempts_key(pattern, group), members_key(pattern, group))
  redis.call('HDEL', DEADLINES, pattern .. ' ' .. group)
  local left = redis.pcall('XINFO', 'GROUPS', stream)
  if failed(left) or #left == 0 then
    redis.call('DEL', stream, PREFIX .. 'idle:' .. pattern)
    unregister(pattern)
  end
  if failed(r) then return 0 end
  return r
end

-- Removes the groups whose deadline passed (group_expiry after their last member left, or
-- after the last sign of life of members that died without leaving), and patterns without
-- groups. Returns how many groups it removed.
local function sweep(now)
  local removed = 0
  local deadlines = redis.call('HGETALL', DEADLINES)
  for i = 1, #deadlines, 2 do
    if tonumber(deadlines[i + 1]) < now then
      local pattern, group = string.match(deadlines[i], '^(%S+) (%S+)$')
      if pattern then
        removed = removed + destroy(pattern, group)
      else
        redis.call('HDEL', DEADLINES, deadlines[i])
      end
    end
  end
  for _, p in ipairs(redis.call('ZRANGEBYSCORE', GROUPS, '-inf', '(' .. now)) do
    local groups = redis.pcall('XINFO', 'GROUPS', PREFIX .. 'stream:' .. p)
    if failed(groups) or #groups == 0 then
      redis.call('DEL', PREFIX .. 'stream:' .. p, PREFIX .. 'idle:' .. p)
      unregister(p)
    end
  end
  return removed
end

-- Publishes data to topic: on Pub/Sub, and on the stream of each pattern with groups that
-- matches. Returns how many receive it (Pub/Sub receivers plus group streams), the patterns
-- whose stream is full (or nil) and the matching patterns with groups (space-separated).
-- A route (topic -> patterns that have groups) is the topic looked up among exact patterns
-- plus a match against each wildcard one, so thousands of groups on their own topics cost a
-- lookup. While wildcard groups exist, routes are cached in a hash (an exact pattern coming or
-- going drops only its topic's route, a wildcard one every route); without them nothing is
-- cached, so a publish writes nothing but its stream entries. A stream longer than MAXLEN is
-- trimmed of what its groups acknowledged; if its backlog is still longer, the entry is added
-- all the same (never dropped) and the stream is reported full.
local function publish(topic, data)
  local n = redis.call('PUBLISH', topic, data)
  local route = redis.call('HGET', ROUTES, topic)
  if not route then
    local found = {}
    if redis.call('ZSCORE', GROUPS, topic) then found[1] = topic end
    local wildcards = redis.call('SMEMBERS', WILDCARDS)
    for _, p in ipairs(wildcards) do
      if matches(p, topic) then found[#found + 1] = p end
    end
    route = table.concat(found, ' ')
    -- Without wildcard groups the lookup above is as cheap as the cache, and not writing
    -- keeps a publish free of the append-only file's fsync (appendfsync always).
    if #wildcards > 0 then
      if redis.call('HLEN', ROUTES) >= MAX_ROUTES then redis.call('DEL', ROUTES) end
      redis.call('HSET', ROUTES, topic, route)
    end
  end
  local full = nil
  if route ~= '' then
    for p in string.gmatch(route, '%S+') do
      local stream = PREFIX .. 'stream:' .. p
      if redis.call('XLEN', stream) >= MAXLEN and trim(stream) >= MAXLEN then
        full = full and (full .. ' ' .. p) or p
      end
      redis.call('XADD', stream, '*', 'message', data)
      if redis.call('DEL', PREFIX .. 'idle:' .. p) == 1 then
        redis.call('PUBLISH', PREFIX .. 'wake:' .. p, '')
      end
      n = n + 1
    end
  end
  return n, full, route
end
