"""The Redis store's Lua scripts (presence/store/redis.py: the key layout they keep, and why
scripts never parse JSON or floats). Each runs atomically in one hash slot: a room's keys, or the
site-wide ones.
"""

from __future__ import annotations

# How long a fence outlives the proc's claims in a room, and how long ``versions`` remembers
# the version of an emptied room: far longer than any call can be in flight.
FENCE_TTL_MS = 3_600_000
VERSION_HORIZON_US = 3_600_000_000

# -- Lua ------------------------------------------------------------------------------------
# Room scripts that change claims share KEYS[1..7] = n, d, t, h, v, claim, fence.

_LUA_COMMON = """
local function hdecr(key, field)
  if redis.call('HINCRBY', key, field, -1) <= 0 then redis.call('HDEL', key, field) end
end

-- Forget a reader's record in a room: data, recency and histogram entry.
local function drop_record(d, t, h, id)
  local stored = redis.call('HGET', d, id)
  if stored then
    local b = string.match(stored, '^(%d+)|')
    if b then hdecr(h, b) end
    redis.call('HDEL', d, id)
  end
  redis.call('ZREM', t, id)
end

-- After the room's count may have changed: drop an empty room, and give the count a new
-- version (this node's clock in microseconds, forced upward while the room exists) that
-- orders the site-wide ranking updates of all processes.
local function settle(n, d, t, h, v)
  local count = redis.call('HLEN', n)
  local now = redis.call('TIME')
  local version = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local last = tonumber(redis.call('GET', v) or '0')
  if version <= last then version = last + 1 end
  if count > 0 then
    redis.call('SET', v, string.format('%.0f', version))
  else
    redis.call('DEL', d, t, h, v)
  end
  return count, version
end

local function fence_of(fence)
  return tonumber(redis.call('GET', fence) or '0')
end
"""

# KEYS: n d t h v claim fence; ARGV: token, then (id, updated_at, bucket, value) groups.
# Claims each reader for this proc (idempotent) and stores the record unless one exists.
# Refused ({0}) when the proc holds nobody here and the token is not above the fence: the
# proc's index entry may have been removed since this join marked it. Else returns
# {1, count, version, stored values}.
_JOIN = (
    _LUA_COMMON
    + """
local n, d, t, h, v, claim, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local token = tonumber(ARGV[1])
local fenced = fence_of(fence)
if token <= fenced and redis.call('SCARD', claim) == 0 then return {0} end
local out = {}
for i = 2, #ARGV, 4 do
  local id, updated, b, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('SADD', claim, id) == 1 or redis.call('HEXISTS', n, id) == 0 then
    redis.call('HINCRBY', n, id, 1)
  end
  local stored = redis.call('HGET', d, id)
  if not stored then
    stored = value
    redis.call('HSET', d, id, value)
    redis.call('ZADD', t, updated, id)
    redis.call('HINCRBY', h, b, 1)
  end
  out[#out + 1] = stored
end
if token > fenced then redis.call('SET', fence, ARGV[1]) else redis.call('PERSIST', fence) end
local count, version = settle(n, d, t, h, v)
return {1, count, version, out}
"""
)

# KEYS: n d t h v claim fence; ARGV: reader id.
# Drops this proc's claim. Returns {gone, fence, count, version}: gone is 1 when no proc holds
# the reader here any more; fence > 0 when this proc now holds nobody here (its index entry
# may go if it still holds that token); version 0 when the count did not change.
_LEAVE = (
    _LUA_COMMON
    + """
local n, d, t, h, v, claim, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local id = ARGV[1]
if redis.call('SREM', claim, id) == 0 then
  return {1 - redis.call('HEXISTS', n, id), 0, 0, 0}
end
local fenced = 0
if redis.call('SCARD', claim) == 0 then
  fenced = fence_of(fence)
  redis.call('PEXPIRE', fence, FENCE_TTL_MS)
end
if redis.call('HINCRBY', n, id, -1) > 0 then return {0, fenced, 0, 0} end
redis.call('HDEL', n, id)
drop_record(d, t, h, id)
local count, version = settle(n, d, t, h, v)
return {1, fenced, count, version}
"""
).replace("FENCE_TTL_MS", str(FENCE_TTL_MS))

# KEYS: n d t h; ARGV: (id, updated_at, bucket, Reader JSON) groups.
# Newest updated_at wins (ties: the later write), for readers with a record; keeps joined_at.
_UPDATE = (
    _LUA_COMMON
    + """
local d, t, h = KEYS[2], KEYS[3], KEYS[4]
for i = 1, #ARGV, 4 do
  local id, updated, b, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local stored = redis.call('HGET', d, id)
  if stored then
    local current = redis.call('ZSCORE', t, id)
    if not current or tonumber(updated) >= tonumber(current) then
      local old, joined = string.match(stored, '^(%d+)|([^|]*)|')
      if old ~= b then
        if old then hdecr(h, old) end
        redis.call('HINCRBY', h, b, 1)
      end
      redis.call('HSET', d, id, b .. '|' .. (joined or 'null') .. '|' .. body)
      redis.call('ZADD', t, updated, id)
    end
  end
end
return 0
"""
)

# KEYS: n d t h; ARGV: limit. Returns {count, newest stored values, flat histogram}.
_ROOM_STATE = """
local n, d, t, h = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local limit = tonumber(ARGV[1])
local values = {}
if limit > 0 then
  for _, id in ipairs(redis.call('ZREVRANGE', t, 0, limit - 1)) do
    local stored = redis.call('HGET', d, id)
    if stored then values[#values + 1] = stored end
  end
end
return {redis.call('HLEN', n), values, redis.call('HGETALL', h)}
"""

# KEYS: n d t h v claim fence; ARGV: token (the proc's index entry, as the reaper read it).
# Drops all the proc's claims in one room, unless a join by the proc claimed here after that
# entry was read (the proc is alive): then {0}. Else {1, count, version, readers nobody holds
# any more}; the fence is raised to the token so that older joins still in flight are refused.
_REAP_ROOM = (
    _LUA_COMMON
    + """
local n, d, t, h, v, claim, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
if fence_of(fence) > tonumber(ARGV[1]) then return {0} end
local gone = {}
for _, id in ipairs(redis.call('SMEMBERS', claim)) do
  if redis.call('HINCRBY', n, id, -1) <= 0 then
    redis.call('HDEL', n, id)
    drop_record(d, t, h, id)
    gone[#gone + 1] = id
  end
end
redis.call('DEL', claim)
redis.call('SET', fence, ARGV[1], 'PX', FENCE_TTL_MS)
local count, version = settle(n, d, t, h, v)
return {1, count, version, gone}
"""
).replace("FENCE_TTL_MS", str(FENCE_TTL_MS))

# KEYS: n v claim fence; ARGV: token (this proc's index entry of a room it no longer holds
# locally). Changes no claim. When the proc holds nobody here, raises the fence to the token
# (older joins still in flight will be refused) and returns {1, fence, count, version} for the
# conditional removal of the entry and the ranking; else {0}.
_SWEEP = """
local n, v, claim, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('SCARD', claim) > 0 then return {0} end
local fenced = tonumber(redis.call('GET', fence) or '0')
if tonumber(ARGV[1]) > fenced then
  redis.call('SET', fence, ARGV[1], 'PX', FENCE_TTL_MS)
  fenced = tonumber(ARGV[1])
end
-- The current count's version; an empty room has none left, but any later count will be
-- versioned after this node's clock now.
local count = redis.call('HLEN', n)
local version = tonumber(redis.call('GET', v) or '0')
if count == 0 then
  local now = redis.call('TIME')
  version = tonumber(now[1]) * 1000000 + tonumber(now[2])
end
return {1, fenced, count, version}
""".replace("FENCE_TTL_MS", str(FENCE_TTL_MS))

# -- site-wide scripts (slot {g}) --

# KEYS: index; ARGV: token, rooms. Entries only grow, so a mark landing late changes nothing.
_MARK = """
local token = tonumber(ARGV[1])
for i = 2, #ARGV do
  if token > tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
  end
end
return 0
"""

# KEYS: rank, versions, index; ARGV: number of counts, (room, count, version) triples, then
# (room, fence) pairs. A count replaces the ranked one only when its version is newer (version
# 0: no information). An index entry is removed only if it still holds the fence's token.
_SITE = """
local rank, versions, index = KEYS[1], KEYS[2], KEYS[3]
local last = 1 + 3 * tonumber(ARGV[1])
local newest = 0
for i = 2, last, 3 do
  local room, count, version = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if version > 0 then
    if version > tonumber(redis.call('ZSCORE', versions, room) or '0') then
      redis.call('ZADD', versions, ARGV[i + 2], room)
      if count > 0 then
        redis.call('ZADD', rank, -count, room)
      else
        redis.call('ZREM', rank, room)
      end
    end
    if version > newest then newest = version end
  end
end
if newest > 0 then
  redis.call('ZREMRANGEBYSCORE', versions, '-inf', '(' .. string.format('%.0f', newest - HORIZON_US))
end
for i = last + 1, #ARGV, 2 do
  local held = redis.call('HGET', index, ARGV[i])
  if held and tonumber(held) == tonumber(ARGV[i + 1]) then redis.call('HDEL', index, ARGV[i]) end
end
return 0
""".replace("HORIZON_US", str(VERSION_HORIZON_US))

# -- per-address counts (slot {g}). KEYS: ipr ipd ipn ipc:<proc>.

_LUA_ADDRESSES = """
local function hdecr(key, field)
  if redis.call('HINCRBY', key, field, -1) <= 0 then redis.call('HDEL', key, field) end
end

-- Change a proc's count of connections of "<address>|<reader>" by delta, and the site's.
local function adjust(ipr, ipd, ipn, ipc, pair, delta)
  local address = string.match(pair, '^([^|]*)|')
  if redis.call('HINCRBY', ipc, pair, delta) <= 0 then redis.call('HDEL', ipc, pair) end
  local before = tonumber(redis.call('HGET', ipr, pair) or '0')
  local after = before + delta
  if after > 0 then redis.call('HSET', ipr, pair, after) else redis.call('HDEL', ipr, pair) end
  if before <= 0 and after > 0 then
    redis.call('HINCRBY', ipd, address, 1)
  elseif before > 0 and after <= 0 then
    hdecr(ipd, address)
  end
  if redis.call('HINCRBY', ipn, address, delta) <= 0 then redis.call('HDEL', ipn, address) end
end

-- Make the proc's counts exactly ``wanted`` (pair -> connections).
local function sync_addresses(ipr, ipd, ipn, ipc, wanted)
  local held = redis.call('HGETALL', ipc)
  for i = 1, #held, 2 do
    local pair, n = held[i], tonumber(held[i + 1])
    local delta = (wanted[pair] or 0) - n
    if delta ~= 0 then adjust(ipr, ipd, ipn, ipc, pair, delta) end
    wanted[pair] = nil
  end
  for pair, n in pairs(wanted) do
    if n > 0 then adjust(ipr, ipd, ipn, ipc, pair, n) end
  end
end
"""

# ARGV: address, reader, max readers, max connections (-1: no cap). Returns 1 when counted.
_ADMIT = (
    _LUA_ADDRESSES
    + """
local ipr, ipd, ipn, ipc = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local address, pair = ARGV[1], ARGV[1] .. '|' .. ARGV[2]
local max_readers, max_connections = tonumber(ARGV[3]), tonumber(ARGV[4])
if max_connections >= 0 and tonumber(redis.call('HGET', ipn, address) or '0') >= max_connections then
  return 0
end
if max_readers >= 0 and redis.call('HEXISTS', ipr, pair) == 0
    and tonumber(redis.call('HGET', ipd, address) or '0') >= max_readers then
  return 0
end
adjust(ipr, ipd, ipn, ipc, pair, 1)
return 1
"""
)

# ARGV: "<address>|<reader>".
_DISMISS = (
    _LUA_ADDRESSES
    + """
if tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0') > 0 then
  adjust(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], -1)
end
return 0
"""
)

# ARGV: ("<address>|<reader>", connections) pairs: the proc's whole share (heartbeat).
_SYNC_ADDRESSES = (
    _LUA_ADDRESSES
    + """
local wanted = {}
for i = 1, #ARGV, 2 do wanted[ARGV[i]] = tonumber(ARGV[i + 1]) end
sync_addresses(KEYS[1], KEYS[2], KEYS[3], KEYS[4], wanted)
return 0
"""
)

# KEYS: on, proc's online set; ARGV: reader ids. Idempotent per proc.
_CLAIM_ONLINE = """
local on, mine = KEYS[1], KEYS[2]
for _, id in ipairs(ARGV) do
  if redis.call('SADD', mine, id) == 1 or redis.call('HEXISTS', on, id) == 0 then
    redis.call('HINCRBY', on, id, 1)
  end
end
return 0
"""

# KEYS: on, proc's online set; ARGV: reader ids.
_RELEASE_ONLINE = """
local on, mine = KEYS[1], KEYS[2]
for _, id in ipairs(ARGV) do
  if redis.call('SREM', mine, id) == 1 then
    if redis.call('HINCRBY', on, id, -1) <= 0 then redis.call('HDEL', on, id) end
  end
end
return 0
"""

# Reaping checks, in the same atomic step, that the proc is still silent (its last beat
# before the cutoff): a proc that beat again meanwhile, or one already reaped, is left alone.
_STILL_SILENT = """
local function still_silent(procs, proc, cutoff)
  if cutoff == '' then return true end
  local beat = redis.call('ZSCORE', procs, proc)
  return beat ~= false and tonumber(beat) < tonumber(cutoff)
end
"""

# KEYS: procs, proc's room index; ARGV: proc, cutoff ('' = unconditional).
# Returns {1, flat index} when the proc is (still) silent, else {0}.
_REAP_BEGIN = (
    _STILL_SILENT
    + """
if not still_silent(KEYS[1], ARGV[1], ARGV[2]) then return {0} end
return {1, redis.call('HGETALL', KEYS[2])}
"""
)

# KEYS: on, proc's online set, proc's room index, procs, then ipr ipd ipn ipc:<proc>;
# ARGV: proc, cutoff ('' = unconditional).
# Drops the proc's online and address claims; forgets the proc once its index is empty (else
# the next reaper finishes the rooms left). Returns 1 when the proc is forgotten.
_REAP_FINISH = (
    _STILL_SILENT
    + _LUA_ADDRESSES
    + """
local on, mine, index, procs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local proc, cutoff = ARGV[1], ARGV[2]
if not still_silent(procs, proc, cutoff) then return 0 end
for _, id in ipairs(redis.call('SMEMBERS', mine)) do
  if redis.call('HINCRBY', on, id, -1) <= 0 then redis.call('HDEL', on, id) end
end
redis.call('DEL', mine)
sync_addresses(KEYS[5], KEYS[6], KEYS[7], KEYS[8], {})
if redis.call('HLEN', index) > 0 then return 0 end
redis.call('ZREM', procs, proc)
return 1
"""
)

SCRIPTS = {
    "join": _JOIN,
    "leave": _LEAVE,
    "update": _UPDATE,
    "room_state": _ROOM_STATE,
    "reap_room": _REAP_ROOM,
    "sweep": _SWEEP,
    "mark": _MARK,
    "site": _SITE,
    "claim_online": _CLAIM_ONLINE,
    "release_online": _RELEASE_ONLINE,
    "reap_begin": _REAP_BEGIN,
    "reap_finish": _REAP_FINISH,
    "admit": _ADMIT,
    "dismiss": _DISMISS,
    "sync_addresses": _SYNC_ADDRESSES,
}
