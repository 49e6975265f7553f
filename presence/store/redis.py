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
from presence.store.redis_scripts import SCRIPTS

logger = logging.getLogger(__name__)

# A join refused by its fence marks again with a newer token; more than a few refusals in a
# row would mean concurrent joins of the same room keep overtaking each other.
_CLAIM_ATTEMPTS = 10

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
            entry = self._clients[loop] = (client, {n: client.register_script(t) for n, t in SCRIPTS.items()})
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
