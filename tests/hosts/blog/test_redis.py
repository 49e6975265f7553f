"""Two server processes on one Redis, configured as the README says (``redis_channel_layers``
and ``PRESENCE_REDIS_URL``): one count, and no socket timeouts while idle."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = [pytest.mark.processes, pytest.mark.redis, pytest.mark.slow]

ROOM = "post:django-channels-in-practice"


async def test_two_processes_share_the_count_and_idle_without_timeouts(host_server, reader, redis_url, redis_prefix):
    first, second = await asyncio.gather(
        asyncio.to_thread(host_server, name="blog-redis-1", REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix),
        asyncio.to_thread(host_server, name="blog-redis-2", REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix),
    )
    ada = await reader(first.ws, session="redisreaderada")
    bo = await reader(second.ws, session="redisreaderbo1")
    for client in (ada, bo):
        await client.send(type="join", room=ROOM)
    for client in (ada, bo):  # each process counts the other's reader: in the site and in the room
        seen = {"online": client.frames[0]["online"], "room": 0}

        def both_two(frame, seen=seen):
            kind = "room" if frame.get("type") in ("room", "room_state") else frame.get("type")
            if kind in seen and "count" in frame:
                seen[kind] = frame["count"]
            return seen == {"online": 2, "room": 2}

        if not both_two({}):
            await client.wait_for(both_two)

    # Idle longer than redis-py 8's default socket timeout (5 s), which the layer must not have.
    await asyncio.sleep(7)
    await ada.close()
    await bo.wait_for(lambda f: f.get("type") == "online" and f["count"] == 1)
    for server in (first, second):
        assert "TimeoutError" not in server.output and "Timeout reading" not in server.output, server.output
