"""The Lua scripts that keep publishing and group bookkeeping atomic on the server.

Publishing runs a script so that one round trip reaches both kinds of subscription, and so
that it is atomic with group registration: once a group's registration has returned, every
later publish sees it. Scripts build their keys from the prefix, so they need a standalone
Redis (or a single shard), not Redis Cluster.
"""

from __future__ import annotations

import hashlib

from amb_redis._resp import bulk, command

# Shared helpers. `match` is the AMQP rule of amb_core.topics, on segments: `*` is exactly
# one segment, `#` zero or more; `matches` adds its other rule: a pattern that starts with a
# wildcard never matches the bus's own topics (reply inboxes, under `_amb.`).
_COMMON = """
local PREFIX = '{prefix}'
local GROUPS = PREFIX .. 'groups'
local ROUTES = PREFIX .. 'routes'
local RELEASED = '_released'

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

local function dead_letter(stream, pattern, group, entry, attempts)
  local fields = entry[2]
  local data = ''
  for i = 1, #fields, 2 do
    if fields[i] == 'message' then data = fields[i + 1] end
  end
  redis.call('XADD', PREFIX .. 'dlq:' .. pattern .. ':' .. group, 'MAXLEN', '~', {dlq_maxlen}, '*',
    'message', data, 'stream', stream, 'group', group, 'id', entry[1], 'attempts', attempts)
end
"""

# ARGV: topic, data. Returns how many subscriptions can receive it: Pub/Sub receivers plus
# group streams. Routes (topic -> patterns that have groups) are cached in a hash, dropped
# whenever the set of patterns changes.
_PUBLISH = """
local topic, data = ARGV[1], ARGV[2]
local n = redis.call('PUBLISH', topic, data)
local route = redis.call('HGET', ROUTES, topic)
if not route then
  route = ''
  local patterns = redis.call('ZRANGE', GROUPS, 0, -1)
  if #patterns > 0 then
    local found = {{}}
    for _, p in ipairs(patterns) do
      if matches(p, topic) then found[#found + 1] = p end
    end
    route = table.concat(found, ' ')
  end
  if redis.call('HLEN', ROUTES) >= {max_routes} then redis.call('DEL', ROUTES) end
  redis.call('HSET', ROUTES, topic, route)
end
if route ~= '' then
  for p in string.gmatch(route, '%S+') do
    redis.call('XADD', PREFIX .. 'stream:' .. p, 'MAXLEN', '~', {maxlen}, '*', 'message', data)
    if redis.call('DEL', PREFIX .. 'idle:' .. p) == 1 then
      redis.call('PUBLISH', PREFIX .. 'wake:' .. p, '')
    end
    n = n + 1
  end
end
return n
"""

# ARGV: pattern, group, consumer, now. Creates the stream, the consumer group (reading only
# entries added from now on) and the consumer, and registers the pattern for publishers.
# Returns 1 if the group was created, 0 if it existed.
_ENSURE = """
local pattern, group, consumer, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local stream = PREFIX .. 'stream:' .. pattern
local created = 1
local r = redis.pcall('XGROUP', 'CREATE', stream, group, '$', 'MKSTREAM')
if failed(r) then
  if not string.find(r.err, 'BUSYGROUP', 1, true) then return r end
  created = 0
end
redis.call('XGROUP', 'CREATECONSUMER', stream, group, consumer)
if redis.call('ZADD', GROUPS, now, pattern) == 1 then redis.call('DEL', ROUTES) end
return created
"""

# ARGV: pattern, group, consumer, entry id, max attempts. After a handler failed: redeliver
# the entry to the same consumer (XCLAIM counts the attempt) or, once it has been delivered
# max attempts times, move it to the dead-letter stream. Returns the entry to redeliver
# (an array), the attempts made when it was dead-lettered (> 0), or 0 when it is no longer
# this consumer's.
_FAIL = """
local pattern, group, consumer, id, max = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local stream = PREFIX .. 'stream:' .. pattern
local p = redis.pcall('XPENDING', stream, group, id, id, 1)
if failed(p) or #p == 0 or p[1][2] ~= consumer then return 0 end
local attempts = p[1][4]
if attempts >= max then
  local e = redis.call('XRANGE', stream, id, id)
  if #e > 0 then dead_letter(stream, pattern, group, e[1], attempts) end
  redis.call('XACK', stream, group, id)
  return attempts
end
local e = redis.call('XCLAIM', stream, group, consumer, 0, id)
if #e == 0 or not e[1][2] then
  redis.call('XACK', stream, group, id)
  return 0
end
return e
"""

# ARGV: pattern, group, consumer, min idle (ms), count, max attempts, cursor. Takes over
# entries another consumer left pending for min idle ms (it died, or released them), moving
# those already delivered max attempts times to the dead-letter stream instead.
# Returns {next cursor, entries, dead-lettered count}.
_CLAIM = """
local pattern, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local max = tonumber(ARGV[6])
local stream = PREFIX .. 'stream:' .. pattern
local r = redis.pcall('XAUTOCLAIM', stream, group, consumer, ARGV[4], ARGV[7], 'COUNT', ARGV[5])
if failed(r) then return r end
local keep = {{}}
local dead = 0
for _, e in ipairs(r[2]) do
  if type(e) == 'table' and e[2] then
    local p = redis.call('XPENDING', stream, group, e[1], e[1], 1)
    local attempts = (p[1] and p[1][4]) or 1
    if attempts > max then
      dead_letter(stream, pattern, group, e, attempts - 1)
      redis.call('XACK', stream, group, e[1])
      dead = dead + 1
    else
      keep[#keep + 1] = e
    end
  elseif type(e) == 'table' then
    redis.call('XACK', stream, group, e[1])
  end
end
return {{r[1], keep, dead}}
"""

# ARGV: pattern, group, consumer. A member leaves: hand what it still holds to the group
# (pending under RELEASED with a huge idle time, so the next XAUTOCLAIM by any member takes
# it) and wake the other members; then, if no member is left and nothing is pending or
# unread, delete the group, and the stream with its registration once it has no group left.
# Returns the number of entries handed over.
_RELEASE = """
local pattern, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local stream = PREFIX .. 'stream:' .. pattern
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
if moved > 0 then
  redis.call('PUBLISH', PREFIX .. 'wake:' .. pattern, 'claim')
  return moved
end
local info = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local h = {{}}
  for i = 1, #g, 2 do h[g[i]] = g[i + 1] end
  if h['name'] == group then info = h end
end
if not info or info['pending'] > 0 then return 0 end
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local h = {{}}
  for i = 1, #c, 2 do h[c[i]] = c[i + 1] end
  if h['name'] ~= RELEASED then return 0 end
end
if #redis.call('XRANGE', stream, '(' .. info['last-delivered-id'], '+', 'COUNT', 1) > 0 then return 0 end
redis.call('XGROUP', 'DESTROY', stream, group)
if #redis.call('XINFO', 'GROUPS', stream) == 0 then
  redis.call('DEL', stream, PREFIX .. 'idle:' .. pattern)
  if redis.call('ZREM', GROUPS, pattern) == 1 then redis.call('DEL', ROUTES) end
end
return 0
"""

# ARGV: cutoff (s). Forgets patterns no live member has vouched for since cutoff (their
# members are gone without leaving, e.g. crashed): deletes their streams and registration.
_SWEEP = """
local dead = redis.call('ZRANGEBYSCORE', GROUPS, '-inf', '(' .. ARGV[1])
for _, p in ipairs(dead) do
  redis.call('ZREM', GROUPS, p)
  redis.call('DEL', PREFIX .. 'stream:' .. p, PREFIX .. 'idle:' .. p)
end
if #dead > 0 then redis.call('DEL', ROUTES) end
return #dead
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
        self.ensure = build(_ENSURE)
        self.fail = build(_FAIL)
        self.claim = build(_CLAIM)
        self.release = build(_RELEASE)
        self.sweep = build(_SWEEP)
        self.all = (self.publish, self.ensure, self.fail, self.claim, self.release, self.sweep)
