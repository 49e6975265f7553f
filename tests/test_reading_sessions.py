"""The beacon's final position handed to a socket's leave through the cache (``presence.reading_sessions``):
it ends the session it was sent for, and no later one."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.test import AsyncClient, override_settings

from presence import reading_sessions
from presence.models import ReadingSession

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_caches")]


async def beacon(session: str, room: str, position: float) -> None:
    """What the widget's ``navigator.sendBeacon`` sends when the tab closes."""
    body = json.dumps({"session": session, "room": room, "position": position})
    response = await AsyncClient().post("/api/presence/beacon/", body, content_type="text/plain;charset=UTF-8",
                                        headers={"Origin": "http://localhost"})
    assert response.status_code == 204


async def read(ws, clock, session: str, room: str, position: float, seconds: float = 30):
    """A tab that joins ``room``, reads for ``seconds`` and reports ``position`` over its socket."""
    client = await ws(session=session)
    await client.receive_json_from()  # hello
    await client.send_json_to({"type": "join", "room": room})
    await client.receive_json_from()
    clock.advance(seconds)
    await client.send_json_to({"type": "progress", "room": room, "position": position})
    await client.send_json_to({"type": "ping"})
    while (await client.receive_json_from())["type"] != "pong":
        pass
    return client


async def positions() -> list[tuple[float, float]]:
    rows = ReadingSession.objects.order_by("started_at")
    return [(row.last_position, row.furthest_position) async for row in rows]


async def test_a_beacon_before_the_leave_ends_that_session_only(ws, clock, article):
    room = f"article:{article.pk}"
    tab = await read(ws, clock, "handoffreader1", room, 0.4)
    await beacon("handoffreader1", room, 0.93)  # the socket's close is still on its way
    await tab.disconnect()
    assert await positions() == [(0.93, 0.93)]

    # The same reader comes back a minute later; this tab closes without a beacon (a crash, a
    # discarded tab): its own last position stands, not the first visit's beacon.
    clock.advance(60)
    tab = await read(ws, clock, "handoffreader1", room, 0.2)
    await tab.disconnect()
    assert await positions() == [(0.93, 0.93), (0.2, 0.2)]


async def test_a_beacon_after_the_leave_ends_that_session_only(ws, clock, article):
    room = f"article:{article.pk}"
    tab = await read(ws, clock, "handoffreader2", room, 0.4)
    await tab.disconnect()  # the socket's close is written first
    await beacon("handoffreader2", room, 0.93)
    assert await positions() == [(0.93, 0.93)]

    clock.advance(60)
    tab = await read(ws, clock, "handoffreader2", room, 0.2)
    await tab.disconnect()
    assert await positions() == [(0.93, 0.93), (0.2, 0.2)]


class CountedCache(LocMemCache):
    """Django's local-memory cache, with its reads counted."""

    reads = 0

    def get_many(self, keys, version=None):
        type(self).reads += 1
        return super().get_many(keys, version)


async def test_leaves_at_once_take_their_positions_in_one_cache_read():
    """A shutdown ends thousands of sessions at once: their beacons' positions come out of the
    cache in one read (each with its own position, taken: none is there afterwards)."""
    backend = {"default": {"BACKEND": f"{__name__}.CountedCache", "LOCATION": "counted"}}
    with override_settings(CACHES=backend):
        cache = reading_sessions._final_positions()
        for n in range(200):
            cache.set(reading_sessions._final_key("article:1", f"reader-{n}"), n / 200)
        CountedCache.reads = 0
        taken = await asyncio.gather(
            *(reading_sessions.afinal_position("article:1", f"reader-{n}") for n in range(201))
        )
        assert taken == [n / 200 for n in range(200)] + [None]  # the last sent no beacon
        assert CountedCache.reads == 1
        assert await reading_sessions.afinal_position("article:1", "reader-7") is None
