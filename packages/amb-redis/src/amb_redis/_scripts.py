"""The Lua scripts that keep publishing and group bookkeeping atomic on the server.

Publishing runs a script so that one round trip reaches both kinds of subscription, and so
that it is atomic with group registration: once a group's registration has returned, every
later publish sees it. Scripts build their keys from the prefix, so they need a standalone
Redis (or a single shard), not Redis Cluster.
"""

from __future__ import annotations

import hashlib

from amb_redis._resp import bulk, command

# Shared helpers. `match` is the AMQP rule of amb_core.adapter.topic_matches, on segments: `*` is exactly
# one segment, `#` zero or more; `matches` adds its other rule: a pattern that starts with a
# wildcard never matches the bus's own topics (reply inboxes, under `_amb.`).
_COMMON = """
local PREFIX = '{prefix}'
local GROUPS = PREFIX .. 'groups'
local ROUTES = PREFIX .. 'routes'
local DEADLINES = PREFIX .. 'deadlines'
local WILDCARDS = PREFIX .. 'wildcards'
local RELEASED = '_released'
local RECEIVERS = PREFIX .. 'sub:'
local MAXLEN = {maxlen}

local function segments(s)
  local t = {{}}
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
  local h = {{}}
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
  local live = {{}}
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
    local found = {{}}
    if redis.call('ZSCORE', GROUPS, topic) then found[1] = topic end
    local wildcards = redis.call('SMEMBERS', WILDCARDS)
    for _, p in ipairs(wildcards) do
      if matches(p, topic) then found[#found + 1] = p end
    end
    route = table.concat(found, ' ')
    -- Without wildcard groups the lookup above is as cheap as the cache, and not writing
    -- keeps a publish free of the append-only file's fsync (appendfsync always).
    if #wildcards > 0 then
      if redis.call('HLEN', ROUTES) >= {max_routes} then redis.call('DEL', ROUTES) end
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
"""

# ARGV: topic, data. Publishes (see `publish`) and returns how many receive it, or, when a
# group stream is full, the error "AMBFULL <count> <patterns>", on which publishers wait.
_PUBLISH = """
local n, full = publish(ARGV[1], ARGV[2])
if full then return redis.error_reply('AMBFULL ' .. n .. ' ' .. full) end
return n
"""

# ARGV: topic, data. Publishes a request (see `publish`) and answers as _PUBLISH does, with
# the exact number of AMB subscriptions that receive it instead: each live ungrouped one (it
# listens to a channel RECEIVERS .. <its id> .. ':' .. <its pattern>, which PUBLISH's own count
# cannot tell apart from its bus's other subscriptions) and each group registered on a matching
# stream. For `gather`, which returns once that many have answered.
_COUNTED = """
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
"""

# ARGV: a length, patterns. Trims each pattern's stream that has at least that many entries
# (see `trim`). Returns each stream's length afterwards.
_TRIM = """
local lengths = {{}}
local at_least = tonumber(ARGV[1])
for i = 2, #ARGV do
  local stream = PREFIX .. 'stream:' .. ARGV[i]
  local length = redis.call('XLEN', stream)
  if length >= at_least then length = trim(stream) end
  lengths[i - 1] = length
end
return lengths
"""

# ARGV: pattern, group, consumer, now, the group's deadline, the consumer's, whether to count
# the backlog. Creates the stream, the consumer group (reading only entries added from now on)
# and the consumer, registers the pattern for publishers, and vouches for the group (it lives
# until its deadline unless vouched for again) and for the consumer as a live member. A group
# past its deadline that no sweep has removed yet is removed first: nobody joins an expired
# backlog. Returns {1 if the group was created else 0, its backlog (0 unless asked)}.
_ENSURE = """
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
return {{created, backlog}}
"""

# ARGV: pattern, group, consumer, entry id. After a handler failed: count the failure and
# redeliver the entry to the same consumer (XCLAIM also resets its idle time, so nobody takes
# it over meanwhile). Returns {entry, failures so far}, or 0 when it is no longer this
# consumer's (another member took it over) or no longer exists.
_RETRY = """
local pattern, group, consumer, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local stream = PREFIX .. 'stream:' .. pattern
local attempts = attempts_key(pattern, group)
local p = redis.pcall('XPENDING', stream, group, id, id, 1)
if failed(p) or #p == 0 or p[1][2] ~= consumer then return 0 end
local e = redis.call('XCLAIM', stream, group, consumer, 0, id)
if #e == 0 or not e[1] or not e[1][2] then
  redis.call('XACK', stream, group, id)
  redis.call('HDEL', attempts, id)
  return 0
end
return {{e[1], redis.call('HINCRBY', attempts, id, 1)}}
"""

# ARGV: pattern, group, entry id. Acknowledges an entry that had failed before, and forgets
# its failures.
_DONE = """
local pattern, group, id = ARGV[1], ARGV[2], ARGV[3]
redis.call('XACK', PREFIX .. 'stream:' .. pattern, group, id)
redis.call('HDEL', attempts_key(pattern, group), id)
return 1
"""

# ARGV: pattern, group, entry id, attempts, reason. Moves the entry, as received, to the
# group's dead-letter stream with where it came from, the attempts and the reason, then
# acknowledges it. Returns how many of the oldest dead letters the dead-letter stream's cap
# dropped to make room (0 nearly always).
_DEAD_LETTER = """
local pattern, group, id, attempts, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local stream = PREFIX .. 'stream:' .. pattern
local dlq = PREFIX .. 'dlq:' .. pattern .. ':' .. group
local data = ''
local e = redis.call('XRANGE', stream, id, id)
if #e > 0 and e[1][2] then
  local message = fields_of(e[1][2])['message']
  if message then data = message end
end
redis.call('XADD', dlq, '*', 'message', data, 'stream', stream, 'group', group, 'id', id,
  'attempts', attempts, 'reason', reason)
local dropped = redis.call('XTRIM', dlq, 'MAXLEN', '~', {dlq_maxlen})
redis.call('XACK', stream, group, id)
redis.call('HDEL', attempts_key(pattern, group), id)
return dropped
"""

# ARGV: pattern, group, consumer, count, entry id. The entries this consumer was given after
# that id and has not acknowledged: after a lost connection, those of a read whose answer never
# came. Returns {entries, failures of each entry}.
_RECOVER = """
local pattern, group, consumer, count, after = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local stream = PREFIX .. 'stream:' .. pattern
local attempts = attempts_key(pattern, group)
local r = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, after)
if failed(r) then return r end
local entries = (r and r[1] and r[1][2]) or {{}}
local failures = {{}}
for i, e in ipairs(entries) do
  failures[i] = tonumber(redis.call('HGET', attempts, e[1]) or 0)
end
return {{entries, failures}}
"""

# ARGV: pattern, group, consumer, min idle (ms), count, cursor. Takes over entries another
# consumer left pending for min idle ms (it died, or released them). A take-over is not an
# attempt: the failures counted so far come with each entry.
# Returns {next cursor, entries, failures of each entry}.
_CLAIM = """
local pattern, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local stream = PREFIX .. 'stream:' .. pattern
local attempts = attempts_key(pattern, group)
local r = redis.pcall('XAUTOCLAIM', stream, group, consumer, ARGV[4], ARGV[6], 'COUNT', ARGV[5])
if failed(r) then return r end
local keep, failures = {{}}, {{}}
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
return {{r[1], keep, failures}}
"""

# ARGV: pattern, group, consumer, now, deadline. A member leaves: hand what it still holds to
# the group (pending under RELEASED with a huge idle time, so the next XAUTOCLAIM by any member
# takes it) and wake the other members. The group stays, keeping what is published for it until
# a member joins again; if no live member is left it now lives until the deadline (group_expiry
# from now). Returns the number of entries handed over.
_RELEASE = """
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
  local args = {{'XCLAIM', stream, group, RELEASED, 0}}
  for _, e in ipairs(p) do args[#args + 1] = e[1] end
  args[#args + 1] = 'IDLE'
  args[#args + 1] = 1000000000
  args[#args + 1] = 'JUSTID'
  local claimed = redis.call(unpack(args))
  local got = {{}}
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
"""

# ARGV: now (s). Removes the groups whose deadline passed (see `sweep`).
_SWEEP = """
return sweep(tonumber(ARGV[1]))
"""

# ARGV: now (s). Sweeps, then returns every group as {pattern, group, live members, backlog}.
_LIST = """
local now = tonumber(ARGV[1])
sweep(now)
local out = {{}}
local deadlines = redis.call('HGETALL', DEADLINES)
for i = 1, #deadlines, 2 do
  local pattern, group = string.match(deadlines[i], '^(%S+) (%S+)$')
  if pattern then
    local stream = PREFIX .. 'stream:' .. pattern
    local h = group_info(stream, group)
    if h then
      out[#out + 1] = {{pattern, group, count(live_members(pattern, group, now)), unread(stream, h) + h['pending']}}
    end
  end
end
return out
"""

# ARGV: pattern, group, now. Drops what waits for the group: entries it has not read, and
# entries read and not acknowledged by a live member (handed back, or held by a member that
# died). Returns how many.
_PURGE = """
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
"""

# ARGV: pattern, group, now. Removes the group with its backlog unless it has live members
# (then the error AMBINUSE <members>). Returns 1 if there was such a group, else 0.
_DELETE = """
local pattern, group, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local live = count(live_members(pattern, group, now))
if live > 0 and group_info(PREFIX .. 'stream:' .. pattern, group) then
  return redis.error_reply('AMBINUSE ' .. live)
end
return destroy(pattern, group)
"""


class Script:
    """A Lua script called by SHA (EVALSHA); `as_eval` turns a call into EVAL when the
    server no longer knows it (a SCRIPT FLUSH)."""

    __slots__ = ("_eval", "_evalsha", "sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()
        self._evalsha = bulk(b"EVALSHA") + bulk(self.sha) + bulk(b"0")
        self._eval = bulk(b"EVAL") + bulk(self.source) + bulk(b"0")

    def header(self, count: int) -> bytes:
        """The start of a call with ``count`` arguments (append them with `bulk`)."""
        return b"*%d\r\n" % (count + 3) + self._evalsha

    def call(self, *args: bytes) -> bytes:
        return self.header(len(args)) + b"".join([bulk(arg) for arg in args])

    def load(self) -> bytes:
        return command(b"SCRIPT", b"LOAD", self.source)

    def as_eval(self, packed: bytes) -> bytes | None:
        """``packed`` as an EVAL of this script, or None if it is not a call of this script."""
        start = packed.find(b"\r\n") + 2
        if packed[start : start + len(self._evalsha)] != self._evalsha:
            return None
        return packed[:start] + self._eval + packed[start + len(self._evalsha) :]


class Scripts:
    """The scripts for one key prefix and its limits."""

    def __init__(
        self, prefix: str, *, maxlen: int, dead_letter_maxlen: int, max_routes: int = 10_000
    ) -> None:
        def build(body: str) -> Script:
            return Script(
                (_COMMON + body).format(
                    prefix=prefix, maxlen=maxlen, dlq_maxlen=dead_letter_maxlen, max_routes=max_routes
                )
            )

        self.publish = build(_PUBLISH)
        self.counted = build(_COUNTED)
        self.trim = build(_TRIM)
        self.ensure = build(_ENSURE)
        self.retry = build(_RETRY)
        self.done = build(_DONE)
        self.dead_letter = build(_DEAD_LETTER)
        self.claim = build(_CLAIM)
        self.recover = build(_RECOVER)
        self.release = build(_RELEASE)
        self.sweep = build(_SWEEP)
        self.list = build(_LIST)
        self.purge = build(_PURGE)
        self.delete = build(_DELETE)
        self.all = (
            self.publish,
            self.counted,
            self.trim,
            self.ensure,
            self.retry,
            self.done,
            self.dead_letter,
            self.claim,
            self.recover,
            self.release,
            self.sweep,
            self.list,
            self.purge,
            self.delete,
        )
