"""A DELIBERATELY NAIVE presence server, for benchmarking only: never deploy it; the app never imports it.

It reproduces the reference design (a blog engine's Socket.IO gateway) on the app's own stack
(Daphne, Channels, channels_redis, Redis) and speaks the same wire protocol
(``docs/protocol.md``), so that the load generator (``bench/``) drives both unchanged
and measures the designs, not the stacks:

- Online count: every connection is listed in one Redis hash. Each connect and disconnect
  reads the whole hash (HGETALL), dedupes identities in Python, and group_sends the count to a
  site-wide group, that is to every connection of every process: O(connections) per connect.
- Rooms: each ``progress`` is written to Redis and group_sent to the room's group at once:
  one channel-layer message per consumer per event, no coalescing; each consumer sends its
  own ``room`` frame holding that single update.
- ``room_state``: the room's members are listed (HGETALL) and deduped on every ``join``.

Shared with the app, where it changes nothing measured: the handshake (Origin check, auth
middleware), frame parsing and limits (``presence.protocol``, the frame rate limiter), room
validation (``presence.rooms``), identities and reader ids. Left out: dropping silent
connections, reaping the entries of dead processes, per-address caps, reading history.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qs

import redis.asyncio as aredis
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from presence import identity, protocol, ratelimit, rooms
from presence.conf import app_settings
from presence.errors import NotJoined, PresenceError, RateLimited, TooManyRooms
from presence.store.base import HISTOGRAM_BUCKETS

ONLINE_GROUP = "naive.online"

_clients: dict[asyncio.AbstractEventLoop, aredis.Redis] = {}


def redis_client() -> aredis.Redis:
    """One Redis client per event loop (a client cannot be shared across loops)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        for dead in [lp for lp in _clients if lp.is_closed()]:
            del _clients[dead]
        url = getattr(settings, "NAIVE_REDIS_URL", None) or settings.REDIS_URL or "redis://127.0.0.1:6379/0"
        client = _clients[loop] = aredis.Redis.from_url(url, decode_responses=True)
    return client


def key(*parts: str) -> str:
    return ":".join((getattr(settings, "NAIVE_PREFIX", "naive-baseline"), *parts))


def room_group(room: str) -> str:
    return "naive.room." + room.replace(":", ".", 1)


def now_ms() -> int:
    return int(time.time() * 1000)


async def list_room(client: aredis.Redis, room: str) -> dict[str, dict]:
    """Every reader of the room (one entry per connection, listed, then deduped: newest wins)."""
    readers: dict[str, dict] = {}
    for raw in (await client.hgetall(key("room", room))).values():
        reader = json.loads(raw)
        known = readers.get(reader["id"])
        if known is None or reader["updated_at"] > known["updated_at"]:
            readers[reader["id"]] = reader
    return readers


def room_state(room: str, readers: dict[str, dict]) -> dict:
    buckets = HISTOGRAM_BUCKETS
    histogram = [0] * buckets
    for reader in readers.values():
        histogram[min(int((reader["position"] or 0.0) * buckets), buckets - 1)] += 1
    newest = sorted(readers.values(), key=lambda r: (r["updated_at"], r["id"]), reverse=True)
    return {
        "type": "room_state", "room": room, "count": len(readers),
        "readers": newest[: app_settings.ROOM_STATE_READERS], "histogram": histogram,
    }


class NaiveConsumer(AsyncWebsocketConsumer):
    identity = None

    async def connect(self) -> None:
        self.redis = redis_client()
        session = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("session", [None])[0]
        self.identity = identity.from_handshake(self.scope.get("user"), session)
        self.reader = identity.reader_id(self.identity)
        self.rooms: dict[str, dict] = {}  # room -> this connection's reader object there
        self.counts: dict[str, int] = {}
        self.limiter = ratelimit.FrameLimiter(app_settings.RATE, app_settings.BURST, app_settings.FLOOD_CLOSE_SECONDS)
        await self.accept()
        await self.channel_layer.group_add(ONLINE_GROUP, self.channel_name)
        await self.redis.hset(key("conns"), self.channel_name, self.identity)
        self.online_sent = await self._broadcast_online()
        await self.reply(protocol.hello(self.reader, self.online_sent, now_ms(), app_settings.HEARTBEAT))

    async def disconnect(self, code: int) -> None:
        if self.identity is None:
            return
        for room in list(self.rooms):
            await self._leave(room)
        await self.redis.hdel(key("conns"), self.channel_name)
        await self.channel_layer.group_discard(ONLINE_GROUP, self.channel_name)
        await self._broadcast_online()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        verdict = self.limiter.check()
        if verdict == ratelimit.CLOSE:
            await self.close(protocol.CLOSE_FLOOD)
            return
        command = None
        try:
            command = protocol.parse(text_data, binary=bytes_data is not None)
            if verdict == ratelimit.LIMITED:
                raise RateLimited("too many frames; this one was dropped")
            await self.dispatch_command(command)
        except PresenceError as exc:
            exc.ref = exc.ref or (command.ref if command else None)
            await self.reply(protocol.error(exc))

    async def dispatch_command(self, command: protocol.Command) -> None:
        room = command.room
        if command.type == "ping":
            await self.reply(protocol.pong(now_ms()))
        elif command.type == "join":
            await self._join(room)
        elif command.type == "leave":
            if room not in self.rooms:
                raise NotJoined("this connection has not joined that room")
            await self._leave(room)
        elif command.type == "progress":
            reader = self.rooms.get(room)
            if reader is None:
                raise NotJoined("this connection has not joined that room")
            reader.update(position=command.position, updated_at=now_ms())
            if command.name is not None:
                reader["name"] = command.name
            await self.redis.hset(key("room", room), self.channel_name, json.dumps(reader))
            await self.channel_layer.group_send(
                room_group(room), {"type": "naive.room", "room": room, "updates": [reader], "left": []}
            )
        elif command.type == "identify":
            if command.token is not None:
                who = await identity.identity_from_token(command.token)
            else:
                who = identity.for_session(command.session)
            carried = {room: self.rooms[room] for room in list(self.rooms)}
            for room in carried:
                await self._leave(room)
            self.identity, self.reader = who, identity.reader_id(who)
            await self.redis.hset(key("conns"), self.channel_name, who)
            for room, old in carried.items():
                await self._join(room, carried=old, reply=False)
            self.online_sent = await self._broadcast_online()
            await self.reply(protocol.hello(self.reader, self.online_sent, now_ms(), app_settings.HEARTBEAT))

    async def _join(self, room: str, carried: dict | None = None, reply: bool = True) -> None:
        if room not in self.rooms:
            if len(self.rooms) >= app_settings.MAX_ROOMS:
                raise TooManyRooms(f"a connection may join at most {app_settings.MAX_ROOMS} rooms")
            await rooms.resolve(room)
            now = now_ms()
            reader = {"id": self.reader, "name": None, "position": None, "joined_at": now, "updated_at": now}
            if carried:
                reader.update(name=carried["name"], position=carried["position"])
            self.rooms[room] = reader
            await self.redis.hset(key("room", room), self.channel_name, json.dumps(reader))
            await self.channel_layer.group_add(room_group(room), self.channel_name)
            readers = await list_room(self.redis, room)
            await self.channel_layer.group_send(
                room_group(room),
                {"type": "naive.room", "room": room, "count": len(readers), "updates": [reader], "left": []},
            )
        else:
            readers = await list_room(self.redis, room)
        self.counts[room] = len(readers)
        if reply:
            await self.reply(room_state(room, readers))

    async def _leave(self, room: str) -> None:
        del self.rooms[room]
        await self.redis.hdel(key("room", room), self.channel_name)
        await self.channel_layer.group_discard(room_group(room), self.channel_name)
        readers = await list_room(self.redis, room)
        left = [] if self.reader in readers else [self.reader]  # another tab of it is still there
        await self.channel_layer.group_send(
            room_group(room), {"type": "naive.room", "room": room, "count": len(readers), "updates": [], "left": left}
        )

    async def _broadcast_online(self) -> int:
        """List every connection, dedupe, and push the count to every connection."""
        count = len(set((await self.redis.hgetall(key("conns"))).values()))
        await self.channel_layer.group_send(ONLINE_GROUP, {"type": "naive.online", "count": count})
        return count

    # -- channel-layer messages -------------------------------------------------------------
    async def naive_online(self, event: dict) -> None:
        if event["count"] != self.online_sent:  # protocol: never a repeat of the last value sent
            self.online_sent = event["count"]
            await self.reply(protocol.online(event["count"]))

    async def naive_room(self, event: dict) -> None:
        room = event["room"]
        if room not in self.rooms:
            return
        if "count" in event:  # joins and leaves carry the listed count; progress reuses the last one
            self.counts[room] = event["count"]
        frame = {"type": "room", "room": room, "count": self.counts.get(room, 0)}
        await self.reply({**frame, "updates": event["updates"], "left": event["left"]})

    async def reply(self, frame: dict) -> None:
        await self.send(text_data=protocol.dumps(frame))
