"""Redis store: several server processes share one count through Lua scripts.

Key layout (``P`` is the prefix; braces are Redis Cluster hash tags, so every key of one
room lives in one slot and the site-wide keys in another)::

    P:{g}:on              hash   reader -> number of procs claiming it online (HLEN = online)
    P:{g}:on:<proc>       set    readers <proc> claims online (guards the aggregate)
    P:{g}:rooms:<proc>    hash   room -> token: rooms where <proc> may hold claims (what
                                 reaping walks), with the newest token <proc> marked it with
    P:{g}:procs           zset   proc -> last heartbeat (ms)
    P:{g}:ipr             hash   "<address>|<reader>" -> connections site-wide (per-address caps;
                                 addresses are keyed hashes, never IPs)
    P:{g}:ipd             hash   address -> distinct readers (fields of ``ipr`` of the address)
    P:{g}:ipn             hash   address -> connections
    P:{g}:ipc:<proc>      hash   "<address>|<reader>" -> connections <proc> holds (guards the three)
    P:{g}:rank            zset   room -> -count (negated: ZRANGE gives most readers first,
                                 ties by room name ascending, like the memory store)
    P:{g}:versions        zset   room -> version of the count ``rank`` holds (kept an hour
                                 after a room empties, so that a late older count is refused)
    P:r:{<room>}:n        hash   reader -> number of procs claiming it here (HLEN = count)
    P:r:{<room>}:c:<proc> set    readers <proc> claims here (guards ``n``)
    P:r:{<room>}:f:<proc> string newest token of a join by <proc> that claimed here (the
                                 fence; expires an hour after <proc> holds nobody here)
    P:r:{<room>}:v        string version of the count (µs; deleted with the room)
    P:r:{<room>}:d        hash   reader -> "<bucket>|<joined_at JSON>|<Reader JSON>"
    P:r:{<room>}:t        zset   reader -> updated_at (the newest readers, ties by id desc)
    P:r:{<room>}:h        hash   bucket -> readers in it (zero buckets deleted)

The stored record carries its histogram bucket and the first ``joined_at`` in front of the
JSON so that scripts never parse JSON or floats: buckets are computed in Python with
``bucket()``, exactly as in the memory store.

Every script and multi-key command touches one slot only, so the same code runs on one Redis
and on Redis Cluster (``PRESENCE_REDIS_CLUSTER``). A room script changes one room atomically
(claims, count, records, histogram: what counts must agree on); the site-wide part (the
ranking, the proc's room index) is a separate call before or after it. A process can die
between the two, so the order is chosen for what a crash leaves behind:

- The index entry is written *before* claiming in the room (``mark``). A stale entry is
  harmless (reaping finds nothing there); a missing one would leave a phantom reader after a
  crash, because reaping walks the index.
- An entry is removed only *after* the room says this proc holds nobody there, and only if no
  newer join marked it meanwhile: marks carry a token that grows with every mark of the
  process, the room keeps the token of the newest join that claimed there (the fence), and
  the removal happens only if the entry still holds that token. A join whose token is not
  above the fence while the proc holds nobody in the room is refused and marks again with a
  new token, so a join that raced with a removal never claims without an entry.
- The ranking is derived data: each room script returns the room's count with a version (the
  room node's clock in µs, forced upward while the room exists), and ``rank`` takes a count
  only when its version is newer than the one it holds, so updates arriving out of order
  from several processes cannot leave an old count (or a phantom of an emptied room) behind.
  If a process dies between a room script and the ranking update, the room is still in its
  index: the reaper visits it and updates the ranking. Every heartbeat also re-sends the
  counts of the rooms the process holds and sweeps its index entries of rooms it left (their
  counts go to the ranking, emptied entries are removed as above), so a failed update is
  repaired within a heartbeat.

Reaping reads a silent proc's index in the same atomic step that checks it is still silent,
then reaps room by room: a room whose fence is newer than the entry the reaper read is left
alone (the proc joined there since, so it is alive). Its online claims and the proc itself go
last, each again only if it is still silent. A reaper that dies half-way leaves the index
entries of the rooms left to do, so the next reaper finishes the work.

A join is thus three round trips (mark, room, ranking), a leave two, a heartbeat three plus
reaping; each batch is pipelined (on a cluster, one pipeline per node, sent in parallel).
Versions come from the clocks of the nodes: a room emptied and re-created within the clock
skew between two nodes, while its slot moved from one to the other, keeps its old ranking
entry until its next change or the next heartbeat of a process holding readers there.

The client is made on first use (in the running loop) with one immediate retry and no
backoff: a restarted Redis is reconnected transparently, a down one fails fast; scripts
lost with a restart are loaded again (NOSCRIPT; on a cluster ``SCRIPT LOAD`` goes to every
primary). Keep Redis on ``noeviction``: an evicted key would skew counts until the claims are
re-asserted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import weakref
from collections import defaultdict
from typing import Any

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from presence.store.base import HISTOGRAM_BUCKETS, Reader, RoomState, Store, bucket

logger = logging.getLogger(__name__)

# How long a fence outlives the proc's claims in a room, and how long ``versions`` remembers
# the version of an emptied room: far longer than any call can be in flight.
_FENCE_TTL_MS = 3_600_000
_VERSION_HORIZON_US = 3_600_000_000
# A join refused by its fence marks again with a newer token; more than a few refusals in a
# row would mean concurrent joins of the same room keep overtaking each other.
_CLAIM_ATTEMPTS = 10

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
).replace("FENCE_TTL_MS", str(_FENCE_TTL_MS))

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
).replace("FENCE_TTL_MS", str(_FENCE_TTL_MS))

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
""".replace("FENCE_TTL_MS", str(_FENCE_TTL_MS))

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
""".replace("HORIZON_US", str(_VERSION_HORIZON_US))

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

_SCRIPTS = {
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

# A script call or a plain command, queued in a pipeline.
_Call = tuple[str, list[str], list[Any]]  # (script name, keys, args) or ("", [], command)
# A room's count and its version, for the ranking.
_Count = tuple[str, int, int]


def _num(value: float) -> str:
    """A score or time as Redis and Lua read it back exactly."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _encode(reader: Reader, joined_at: Any = None) -> str:
    joined = reader.joined_at if joined_at is None else joined_at
    return f"{bucket(reader.position)}|{json.dumps(joined)}|{reader.to_json()}"


def _decode(value: str) -> Reader:
    _, joined, body = value.split("|", 2)
    reader = Reader.from_json(body)
    reader.joined_at = json.loads(joined)
    return reader


def _by_room(items: list[tuple[str, Reader]]) -> dict[str, list[Reader]]:
    rooms: dict[str, list[Reader]] = defaultdict(list)
    for room, reader in items:
        rooms[room].append(reader)
    return rooms


POOL_SIZE = 10_000  # at most, to one Redis per process and event loop (Redis's own maxclients)


class RedisStore(Store):
    """One process's view of the presence state kept in Redis (see the module docstring)."""

    def __init__(
        self,
        proc: str,
        url: str | None = None,
        prefix: str = "presence",
        cluster: bool = False,
        **options: Any,
    ):
        super().__init__(proc)
        if not url:
            raise ValueError("RedisStore needs a Redis URL (PRESENCE_REDIS_URL)")
        if any(c in prefix or c in proc for c in "{}"):
            raise ValueError("the prefix and process id must not contain braces (Redis hash tags)")
        self.url = url
        self.prefix = prefix
        self.cluster = cluster
        self.options: dict[str, Any] = {
            "decode_responses": True,
            "health_check_interval": 5,
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
            "retry": Retry(NoBackoff(), 1),
            **options,
        }
        # One client (and its registered scripts) per event loop: sync code (a DRF view, a
        # management command) reaches the store through ``async_to_sync``, which may run each
        # call in a loop of its own, and a client cannot outlive or be shared across loops.
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[aredis.Redis | RedisCluster, dict[str, AsyncScript]]
        ] = weakref.WeakKeyDictionary()
        # Index tokens: unique and growing for this process (seeded from the clock so that a
        # second view of the same proc id keeps growing too). Only their order matters.
        self._tokens = itertools.count(time.time_ns() // 1000)
        g = f"{prefix}:{{g}}"
        self._on, self._procs = f"{g}:on", f"{g}:procs"
        self._rank, self._versions = f"{g}:rank", f"{g}:versions"
        self._ipr, self._ipd, self._ipn = f"{g}:ipr", f"{g}:ipd", f"{g}:ipn"

    # -- keys -----------------------------------------------------------------------------
    def _my_online(self, proc: str) -> str:
        return f"{self.prefix}:{{g}}:on:{proc}"

    def _index(self, proc: str) -> str:
        return f"{self.prefix}:{{g}}:rooms:{proc}"

    def _address_keys(self, proc: str) -> list[str]:
        """Keys of an address script: ipr ipd ipn ipc:<proc>."""
        return [self._ipr, self._ipd, self._ipn, f"{self.prefix}:{{g}}:ipc:{proc}"]

    def _room(self, room: str) -> list[str]:
        """The room's n, d, t, h keys."""
        base = f"{self.prefix}:r:{{{room}}}"
        return [f"{base}:n", f"{base}:d", f"{base}:t", f"{base}:h"]

    def _room_keys(self, room: str, proc: str) -> list[str]:
        """Keys of a room script that changes claims: n d t h v claim fence."""
        base = f"{self.prefix}:r:{{{room}}}"
        return [*self._room(room), f"{base}:v", f"{base}:c:{proc}", f"{base}:f:{proc}"]

    # -- client and batches ---------------------------------------------------------------
    def _connection(self) -> tuple[aredis.Redis | RedisCluster, dict[str, AsyncScript]]:
        """The running event loop's client and scripts, made on first use there."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            if self.cluster:
                client = RedisCluster.from_url(self.url, **self.options)
            else:
                # redis-py 8 refuses a call past 100 pooled connections ("Too many connections"),
                # which thousands of readers joining or leaving at once exceed. Not a blocking pool:
                # a connection lost to a cancelled call would then make later calls wait.
                client = aredis.Redis.from_url(self.url, **{"max_connections": POOL_SIZE, **self.options})
            entry = self._clients[loop] = (client, {n: client.register_script(t) for n, t in _SCRIPTS.items()})
        return entry

    def _client(self) -> aredis.Redis | RedisCluster:
        return self._connection()[0]

    @property
    def _scripts(self) -> dict[str, AsyncScript]:
        return self._connection()[1]

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)

    async def _batch(self, calls: list[_Call]) -> list[Any]:
        """Run calls in one pipelined round trip (per node). Calls that failed because a node
        restarted are sent once more: scripts missing there are loaded first (NOSCRIPT), and on
        a cluster a dropped connection (which redis-py leaves in the results) makes the client
        start afresh. Every call here is idempotent, so one that may have run can run again."""
        if not calls:
            return []
        client = self._client()
        results = await self._send(client, calls)
        for _ in range(2):  # a dropped connection, then NOSCRIPT on the restarted node
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            dropped = [i for i, r in enumerate(results) if isinstance(r, RedisConnectionError | RedisTimeoutError)]
            again = sorted(missing + dropped) if self.cluster else missing
            if not again:
                break
            if dropped and self.cluster:
                logger.info("presence store: reconnecting to the Redis Cluster")
                await client.aclose()
            if missing:
                logger.info("presence store: loading Lua scripts into Redis")
                for name in {calls[i][0] for i in missing}:
                    self._scripts[name].sha = await client.script_load(self._scripts[name].script)
            for i, result in zip(again, await self._send(client, [calls[i] for i in again]), strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def _send(self, client: aredis.Redis | RedisCluster, calls: list[_Call]) -> list[Any]:
        # No MULTI: each script is atomic by itself, and a cluster pipeline spans nodes (one
        # pipeline per node, routed by the slot of each command's keys). EVALSHA as a raw command:
        # redis-py blocks ``evalsha()`` on cluster pipelines, though it routes it fine.
        pipe = client.pipeline(transaction=False)
        for name, keys, args in calls:
            if name:
                pipe.execute_command("EVALSHA", self._scripts[name].sha, len(keys), *keys, *args)
            else:
                pipe.execute_command(*args)
        return await pipe.execute(raise_on_error=False)

    @staticmethod
    def _groups(readers: list[Reader], encode: bool) -> list[str]:
        args: list[str] = []
        for reader in readers:
            value = _encode(reader) if encode else reader.to_json()
            args += [reader.id, _num(reader.updated_at), str(bucket(reader.position)), value]
        return args

    def _mark(self, token: int, rooms: list[str]) -> _Call:
        return ("mark", [self._index(self.proc)], [token, *rooms])

    def _site(self, proc: str, counts: list[_Count], removals: list[tuple[str, int]]) -> list[_Call]:
        """The ranking update and the conditional index removals after room scripts."""
        if not counts and not removals:
            return []
        args: list[Any] = [len(counts)]
        for count in counts:
            args += count
        for removal in removals:
            args += removal
        return [("site", [self._rank, self._versions, self._index(proc)], args)]

    async def _claim(
        self, rooms: dict[str, list[Reader]], first: list[_Call], sweep: bool = False
    ) -> tuple[list[Any], dict[str, list[str]]]:
        """Claim readers room by room: mark the rooms in this proc's index, run the room
        scripts, then update the ranking. ``first`` (site-wide calls) go with the mark; with
        ``sweep``, index entries of rooms not claimed here are swept. Returns the results of
        ``first`` and the stored values of each room."""
        token = next(self._tokens)
        head = [*first]
        if rooms:
            head.append(self._mark(token, list(rooms)))
        if sweep:
            head.append(("", [], ["HGETALL", self._index(self.proc)]))
        results = await self._batch(head)
        stale = {room: tk for room, tk in results[-1].items() if room not in rooms} if sweep else {}

        counts: list[_Count] = []
        removals: list[tuple[str, int]] = []
        stored: dict[str, list[str]] = {}
        calls = [("sweep", self._sweep_keys(room), [tk]) for room, tk in stale.items()]
        tags = list(stale)
        pending = list(rooms)
        for _ in range(_CLAIM_ATTEMPTS):
            calls += [
                ("join", self._room_keys(room, self.proc), [token, *self._groups(rooms[room], True)])
                for room in pending
            ]
            tags += pending
            refused = []
            for (name, _keys, _args), room, result in zip(calls, tags, await self._batch(calls), strict=True):
                if not int(result[0]):
                    if name == "join":
                        refused.append(room)
                elif name == "join":
                    counts.append((room, int(result[1]), int(result[2])))
                    stored[room] = result[3]
                else:
                    counts.append((room, int(result[2]), int(result[3])))
                    removals.append((room, int(result[1])))
            if not refused:
                break
            # A leave, sweep or reaper removed (or may remove) the entry these joins marked.
            token = next(self._tokens)
            await self._batch([self._mark(token, refused)])
            calls, tags, pending = [], [], refused
        else:
            raise RuntimeError(f"presence store: joins of {pending} kept being refused")
        await self._batch(self._site(self.proc, counts, removals))
        return results[: len(first)], stored

    def _sweep_keys(self, room: str) -> list[str]:
        n, _d, _t, _h, v, claim, fence = self._room_keys(room, self.proc)
        return [n, v, claim, fence]

    # -- the interface --------------------------------------------------------------------
    async def claim_online(self, reader_id: str) -> None:
        await self._script("claim_online", [self._on, self._my_online(self.proc)], [reader_id])

    async def release_online(self, reader_id: str) -> None:
        await self._script("release_online", [self._on, self._my_online(self.proc)], [reader_id])

    async def online(self) -> int:
        return await self._client().hlen(self._on)

    async def admit(self, address: str, reader_id: str, max_readers: int | None, max_connections: int | None) -> bool:
        caps = [-1 if cap is None else int(cap) for cap in (max_readers, max_connections)]
        return bool(await self._script("admit", self._address_keys(self.proc), [address, reader_id, *caps]))

    async def dismiss(self, address: str, reader_id: str) -> None:
        await self._script("dismiss", self._address_keys(self.proc), [f"{address}|{reader_id}"])

    async def admitted(self, address: str) -> tuple[int, int]:
        readers, connections = await self._batch(
            [("", [], ["HGET", self._ipd, address]), ("", [], ["HGET", self._ipn, address])]
        )
        return int(readers or 0), int(connections or 0)

    async def join(self, room: str, reader: Reader) -> Reader:
        _, stored = await self._claim({room: [reader]}, [])
        return _decode(stored[room][0])

    async def leave(self, room: str, reader_id: str) -> bool:
        gone, fence, count, version = await self._script("leave", self._room_keys(room, self.proc), [reader_id])
        counts = [(room, int(count), int(version))] if int(version) else []
        removals = [(room, int(fence))] if int(fence) else []
        await self._batch(self._site(self.proc, counts, removals))
        return bool(gone)

    async def update(self, items: list[tuple[str, Reader]]) -> None:
        await self._batch(
            [("update", self._room(room), self._groups(rs, False)) for room, rs in _by_room(items).items()]
        )

    async def room_state(self, room: str, limit: int = 100) -> RoomState:
        count, values, flat = await self._script("room_state", self._room(room), [max(int(limit), 0)])
        histogram = [0] * HISTOGRAM_BUCKETS
        for field, value in zip(flat[::2], flat[1::2], strict=True):
            histogram[int(field)] = int(value)
        return RoomState(room, int(count), [_decode(v) for v in values], histogram)

    async def counts(self, rooms: list[str]) -> dict[str, int]:
        unique = list(dict.fromkeys(rooms))
        results = await self._batch([("", [], ["HLEN", self._room(room)[0]]) for room in unique])
        return {room: int(count) for room, count in zip(unique, results, strict=True)}

    async def ranking(self, limit: int) -> list[tuple[str, int]]:
        if limit <= 0:
            return []
        ranked = await self._client().zrange(self._rank, 0, limit - 1, withscores=True)
        return [(room, int(-score)) for room, score in ranked]

    async def heartbeat(
        self,
        now_ms: int,
        ttl_ms: int,
        online: list[str],
        rooms: list[tuple[str, Reader]],
        addresses: list[tuple[str, str, int]] | None = None,
    ) -> list[tuple[str, str]]:
        cutoff = _num(now_ms - ttl_ms)
        first: list[_Call] = [
            ("", [], ["ZADD", self._procs, _num(now_ms), self.proc]),
            ("", [], ["ZRANGEBYSCORE", self._procs, "-inf", f"({cutoff}"]),
        ]
        if online:
            first.append(("claim_online", [self._on, self._my_online(self.proc)], list(online)))
        if addresses is not None:
            pairs = [arg for a, r, n in addresses if n > 0 for arg in (f"{a}|{r}", n)]
            first.append(("sync_addresses", self._address_keys(self.proc), pairs))
        results, _ = await self._claim(_by_room(rooms), first, sweep=True)
        silent = [proc for proc in results[1] if proc != self.proc]
        if not silent:
            return []
        logger.info("presence store: reaping silent processes %s", silent)
        return await self._reap(silent, cutoff)

    async def release_all(self) -> list[tuple[str, str]]:
        return await self._reap([self.proc], "")

    async def _reap(self, procs: list[str], cutoff: str) -> list[tuple[str, str]]:
        """Drop every claim of ``procs`` room by room, then their online claims; with a
        cutoff, only procs still silent, and only rooms they did not join again since."""
        begun = await self._batch([("reap_begin", [self._procs, self._index(p)], [p, cutoff]) for p in procs])
        calls: list[_Call] = []
        tags: list[tuple[str, str, int]] = []
        for proc, result in zip(procs, begun, strict=True):
            if not int(result[0]):
                continue
            flat = result[1]
            for room, token in sorted(zip(flat[::2], flat[1::2], strict=True)):
                calls.append(("reap_room", self._room_keys(room, proc), [token]))
                tags.append((proc, room, int(token)))
        gone: set[tuple[str, str]] = set()
        counts: dict[str, list[_Count]] = defaultdict(list)
        removals: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for (proc, room, token), result in zip(tags, await self._batch(calls), strict=True):
            if int(result[0]):
                counts[proc].append((room, int(result[1]), int(result[2])))
                removals[proc].append((room, token))
                gone.update((room, reader_id) for reader_id in result[3])
        finish: list[_Call] = []
        for proc in procs:
            finish += self._site(proc, counts[proc], removals[proc])
            keys = [self._on, self._my_online(proc), self._index(proc), self._procs, *self._address_keys(proc)]
            finish.append(("reap_finish", keys, [proc, cutoff]))
        await self._batch(finish)
        return sorted(gone)

    async def close(self) -> None:
        """Close the running loop's client (clients of other loops go with their loops)."""
        entry = self._clients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[0].aclose()
