"""Redis store: several server processes share one count through Lua scripts.

Key layout (``P`` is the prefix; braces are Redis Cluster hash tags, so every key of one
room lives in one slot and the site-wide keys in another)::

    P:{g}:on              hash   reader -> number of procs claiming it online (HLEN = online)
    P:{g}:on:<proc>       set    readers <proc> claims online (guards the aggregate)
    P:{g}:rooms:<proc>    set    rooms where <proc> holds claims (what reaping walks)
    P:{g}:procs           zset   proc -> last heartbeat (ms)
    P:{g}:rank            zset   room -> -count (negated: ZRANGE gives most readers first,
                                 ties by room name ascending, like the memory store)
    P:r:{<room>}:n        hash   reader -> number of procs claiming it here (HLEN = count)
    P:r:{<room>}:c:<proc> set    readers <proc> claims here (guards ``n``)
    P:r:{<room>}:d        hash   reader -> "<bucket>|<joined_at JSON>|<Reader JSON>"
    P:r:{<room>}:t        zset   reader -> updated_at (the newest readers, ties by id desc)
    P:r:{<room>}:h        hash   bucket -> readers in it (zero buckets deleted)

The stored record carries its histogram bucket and the first ``joined_at`` in front of the
JSON so that scripts never parse JSON or floats: buckets are computed in Python with
``bucket()``, exactly as in the memory store.

Every mutation is one script call touching one room's keys plus the site-wide keys
(``rank``, the proc's room index), so each is atomic and a public call is one round trip
(batches are pipelined). On Redis Cluster the site-wide part of a room script would move to
a second call; reaping already works room by room. Reaping and ``release_all`` take extra
round trips (read the dead proc's room index, then one script per room), which is rare.

The client is made on first use (in the running loop) with one immediate retry and no
backoff: a restarted Redis is reconnected transparently, a down one fails fast; scripts
lost with a restart are loaded again (NOSCRIPT). Keep Redis on ``noeviction``: an evicted
key would skew counts until the claims are re-asserted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import defaultdict
from typing import Any

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from presence.store.base import HISTOGRAM_BUCKETS, Reader, RoomState, Store, bucket

logger = logging.getLogger(__name__)

# -- Lua ------------------------------------------------------------------------------------
# Room scripts share KEYS[1..4] = n, d, t, h of the room.

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

-- After the room's count changed: drop an empty room, keep the ranking in step.
local function settle(n, d, t, h, rank, room)
  local count = redis.call('HLEN', n)
  if count > 0 then
    redis.call('ZADD', rank, -count, room)
  else
    redis.call('DEL', d, t, h)
    redis.call('ZREM', rank, room)
  end
  return count
end
"""

# KEYS: n d t h claim index rank; ARGV: room, then (id, updated_at, bucket, value) groups.
# Claims each reader for this proc (idempotent) and stores the record unless one exists.
# Returns the stored values.
_JOIN = (
    _LUA_COMMON
    + """
local n, d, t, h = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local claim, index, rank = KEYS[5], KEYS[6], KEYS[7]
local room = ARGV[1]
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
if #out > 0 then
  redis.call('SADD', index, room)
  settle(n, d, t, h, rank, room)
end
return out
"""
)

# KEYS: n d t h claim index rank; ARGV: room, reader id.
# Drops this proc's claim; returns 1 when no proc holds the reader in the room any more.
_LEAVE = (
    _LUA_COMMON
    + """
local n, d, t, h = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local claim, index, rank = KEYS[5], KEYS[6], KEYS[7]
local room, id = ARGV[1], ARGV[2]
if redis.call('SREM', claim, id) == 0 then
  return 1 - redis.call('HEXISTS', n, id)
end
if redis.call('SCARD', claim) == 0 then redis.call('SREM', index, room) end
if redis.call('HINCRBY', n, id, -1) > 0 then return 0 end
redis.call('HDEL', n, id)
drop_record(d, t, h, id)
settle(n, d, t, h, rank, room)
return 1
"""
)

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

# KEYS: n d t h claim index rank procs; ARGV: room, proc, cutoff ('' = unconditional).
# Drops all the proc's claims in one room; returns the readers nobody holds any more.
_REAP_ROOM = (
    _LUA_COMMON
    + _STILL_SILENT
    + """
local n, d, t, h = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local claim, index, rank, procs = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local room, proc, cutoff = ARGV[1], ARGV[2], ARGV[3]
if not still_silent(procs, proc, cutoff) then return {} end
local gone = {}
for _, id in ipairs(redis.call('SMEMBERS', claim)) do
  if redis.call('HINCRBY', n, id, -1) <= 0 then
    redis.call('HDEL', n, id)
    drop_record(d, t, h, id)
    gone[#gone + 1] = id
  end
end
redis.call('DEL', claim)
redis.call('SREM', index, room)
settle(n, d, t, h, rank, room)
return gone
"""
)

# KEYS: on, proc's online set, proc's room index, procs; ARGV: proc, cutoff ('' = unconditional).
# Drops the proc's online claims; forgets the proc once it holds no room (else the next
# reaper finishes the rooms it claimed meanwhile). Returns 1 when the proc is forgotten.
_REAP_FINISH = (
    _STILL_SILENT
    + """
local on, mine, index, procs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local proc, cutoff = ARGV[1], ARGV[2]
if not still_silent(procs, proc, cutoff) then return 0 end
for _, id in ipairs(redis.call('SMEMBERS', mine)) do
  if redis.call('HINCRBY', on, id, -1) <= 0 then redis.call('HDEL', on, id) end
end
redis.call('DEL', mine)
if redis.call('SCARD', index) > 0 then return 0 end
redis.call('ZREM', procs, proc)
return 1
"""
)

_SCRIPTS = {
    "join": _JOIN,
    "leave": _LEAVE,
    "update": _UPDATE,
    "room_state": _ROOM_STATE,
    "claim_online": _CLAIM_ONLINE,
    "release_online": _RELEASE_ONLINE,
    "reap_room": _REAP_ROOM,
    "reap_finish": _REAP_FINISH,
}

# A script call or a plain command, queued in a pipeline.
_Call = tuple[str, list[str], list[Any]]  # (script name, keys, args) or ("", [], command)


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


class RedisStore(Store):
    """One process's view of the presence state kept in Redis (see the module docstring)."""

    def __init__(self, proc: str, url: str | None = None, prefix: str = "presence", **options: Any):
        super().__init__(proc)
        if not url:
            raise ValueError("RedisStore needs a Redis URL (PRESENCE_REDIS_URL)")
        if any(c in prefix or c in proc for c in "{}"):
            raise ValueError("the prefix and process id must not contain braces (Redis hash tags)")
        self.url = url
        self.prefix = prefix
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
            asyncio.AbstractEventLoop, tuple[aredis.Redis, dict[str, AsyncScript]]
        ] = weakref.WeakKeyDictionary()
        g = f"{prefix}:{{g}}"
        self._on, self._procs, self._rank = f"{g}:on", f"{g}:procs", f"{g}:rank"

    # -- keys -----------------------------------------------------------------------------
    def _my_online(self, proc: str) -> str:
        return f"{self.prefix}:{{g}}:on:{proc}"

    def _index(self, proc: str) -> str:
        return f"{self.prefix}:{{g}}:rooms:{proc}"

    def _room(self, room: str) -> list[str]:
        """The room's n, d, t, h keys."""
        base = f"{self.prefix}:r:{{{room}}}"
        return [f"{base}:n", f"{base}:d", f"{base}:t", f"{base}:h"]

    def _claim(self, room: str, proc: str) -> str:
        return f"{self.prefix}:r:{{{room}}}:c:{proc}"

    def _room_keys(self, room: str, proc: str) -> list[str]:
        """Keys of a room script that changes claims: n d t h claim index rank."""
        return [*self._room(room), self._claim(room, proc), self._index(proc), self._rank]

    # -- client and batches ---------------------------------------------------------------
    def _connection(self) -> tuple[aredis.Redis, dict[str, AsyncScript]]:
        """The running event loop's client and scripts, made on first use there."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            client = aredis.Redis.from_url(self.url, **self.options)
            entry = self._clients[loop] = (client, {n: client.register_script(t) for n, t in _SCRIPTS.items()})
        return entry

    def _client(self) -> aredis.Redis:
        return self._connection()[0]

    @property
    def _scripts(self) -> dict[str, AsyncScript]:
        return self._connection()[1]

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)

    async def _batch(self, calls: list[_Call]) -> list[Any]:
        """Run calls in one pipelined round trip; scripts missing after a restart are loaded
        and only their calls (which did not run) are sent again."""
        if not calls:
            return []
        client = self._client()
        results = await self._send(client, calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            logger.info("presence store: loading Lua scripts into Redis")
            for name in {calls[i][0] for i in missing}:
                self._scripts[name].sha = await client.script_load(self._scripts[name].script)
            again = await self._send(client, [calls[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def _send(self, client: aredis.Redis, calls: list[_Call]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for name, keys, args in calls:
            if name:
                pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)
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

    def _join_calls(self, items: list[tuple[str, Reader]]) -> list[_Call]:
        by_room: dict[str, list[Reader]] = defaultdict(list)
        for room, reader in items:
            by_room[room].append(reader)
        return [
            ("join", self._room_keys(room, self.proc), [room, *self._groups(readers, True)])
            for room, readers in by_room.items()
        ]

    # -- the interface --------------------------------------------------------------------
    async def claim_online(self, reader_id: str) -> None:
        await self._script("claim_online", [self._on, self._my_online(self.proc)], [reader_id])

    async def release_online(self, reader_id: str) -> None:
        await self._script("release_online", [self._on, self._my_online(self.proc)], [reader_id])

    async def online(self) -> int:
        return await self._client().hlen(self._on)

    async def join(self, room: str, reader: Reader) -> Reader:
        [(name, keys, args)] = self._join_calls([(room, reader)])
        stored = await self._script(name, keys, args)
        return _decode(stored[0])

    async def leave(self, room: str, reader_id: str) -> bool:
        gone = await self._script("leave", self._room_keys(room, self.proc), [room, reader_id])
        return bool(gone)

    async def update(self, items: list[tuple[str, Reader]]) -> None:
        by_room: dict[str, list[Reader]] = defaultdict(list)
        for room, reader in items:
            by_room[room].append(reader)
        await self._batch(
            [("update", self._room(room), self._groups(rs, False)) for room, rs in by_room.items()]
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
        self, now_ms: int, ttl_ms: int, online: list[str], rooms: list[tuple[str, Reader]]
    ) -> list[tuple[str, str]]:
        cutoff = _num(now_ms - ttl_ms)
        calls: list[_Call] = [
            ("", [], ["ZADD", self._procs, _num(now_ms), self.proc]),
            ("", [], ["ZRANGEBYSCORE", self._procs, "-inf", f"({cutoff}"]),
        ]
        if online:
            calls.append(("claim_online", [self._on, self._my_online(self.proc)], list(online)))
        calls += self._join_calls(rooms)
        results = await self._batch(calls)
        silent = [proc for proc in results[1] if proc != self.proc]
        if not silent:
            return []
        logger.info("presence store: reaping silent processes %s", silent)
        return await self._reap(silent, cutoff)

    async def release_all(self) -> None:
        await self._reap([self.proc], "")

    async def _reap(self, procs: list[str], cutoff: str) -> list[tuple[str, str]]:
        """Drop every claim of ``procs`` room by room, then their online claims; with a
        cutoff, each step first checks the proc is still silent."""
        indexes = await self._batch([("", [], ["SMEMBERS", self._index(proc)]) for proc in procs])
        calls: list[_Call] = []
        rooms: list[str] = []
        for proc, index in zip(procs, indexes, strict=True):
            for room in sorted(index):
                keys = [*self._room_keys(room, proc), self._procs]
                calls.append(("reap_room", keys, [room, proc, cutoff]))
                rooms.append(room)
        for proc in procs:
            keys = [self._on, self._my_online(proc), self._index(proc), self._procs]
            calls.append(("reap_finish", keys, [proc, cutoff]))
        results = await self._batch(calls)
        gone = {(room, reader_id) for room, ids in zip(rooms, results, strict=False) for reader_id in ids}
        return sorted(gone)

    async def close(self) -> None:
        """Close the running loop's client (clients of other loops go with their loops)."""
        entry = self._clients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[0].aclose()
