"""The naive benchmark baseline (``bench/baselines/naive``) still speaks the wire protocol.

A smoke test, so that the baseline the load generator compares against cannot rot silently:
two browsers (one with two tabs) through Channels' WebsocketCommunicator, on a real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


@pytest.fixture
async def naive(redis_url, redis_prefix):
    """``await connect(session)`` -> a communicator of the naive baseline, past its ``hello``."""
    from bench.baselines.naive import consumer
    from bench.baselines.naive.asgi import websocket_application

    app = websocket_application()
    opened = []

    async def connect(session: str) -> tuple[WebsocketCommunicator, dict]:
        client = WebsocketCommunicator(app, f"/ws/presence/?session={session}", headers=[(b"origin", b"http://localhost")])
        connected, _ = await client.connect()
        assert connected
        opened.append(client)
        hello = await client.receive_json_from()
        assert hello["type"] == "hello", hello
        return client, hello

    with override_settings(NAIVE_REDIS_URL=redis_url, NAIVE_PREFIX=redis_prefix):
        yield connect
        for client in opened:
            with contextlib.suppress(BaseException):
                await client.disconnect()
    client = consumer._clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


async def test_two_readers_see_each_other(naive, article):
    room = f"article:{article.pk}"
    one, hello_one = await naive("naive-reader-one")
    assert hello_one["online"] == 1
    two, hello_two = await naive("naive-reader-two")
    assert hello_two["online"] == 2
    assert await one.receive_json_from() == {"type": "online", "count": 2}
    tab, hello_tab = await naive("naive-reader-one")  # a second tab: counted once, no repeat sent
    assert hello_tab["online"] == 2
    assert hello_tab["reader"] == hello_one["reader"]
    assert await one.receive_nothing(0.1) and await two.receive_nothing(0.1)

    await one.send_json_to({"type": "join", "room": room})
    state = await one.receive_json_from()
    assert (state["type"], state["count"], len(state["histogram"])) == ("room_state", 1, 20)
    assert (await one.receive_json_from())["type"] == "room"  # its own join, fanned out
    await two.send_json_to({"type": "join", "room": room})
    state = await two.receive_json_from()
    assert state["count"] == 2
    assert {r["id"] for r in state["readers"]} == {hello_one["reader"], hello_two["reader"]}
    joined = await one.receive_json_from()
    assert (joined["type"], joined["count"], joined["updates"][0]["id"]) == ("room", 2, hello_two["reader"])
    await two.receive_json_from()  # its own join

    # One progress frame: one `room` frame with that single update, at once (no tick).
    await two.send_json_to({"type": "progress", "room": room, "position": 0.5, "name": "Two"})
    frame = await one.receive_json_from()
    assert frame["type"] == "room" and frame["count"] == 2 and frame["left"] == []
    assert [(u["id"], u["position"], u["name"]) for u in frame["updates"]] == [(hello_two["reader"], 0.5, "Two")]
    assert await two.receive_json_from() == frame  # the sender's own, too

    # Errors are the protocol's.
    await tab.send_json_to({"type": "progress", "room": room, "position": 0.1, "ref": "r1"})
    assert await tab.receive_json_from() == {
        "type": "error", "code": "not_joined", "message": "this connection has not joined that room", "ref": "r1",
    }
    await tab.send_json_to({"type": "join", "room": "article:999999"})
    assert (await tab.receive_json_from())["code"] == "invalid_room"
    await tab.send_json_to({"type": "ping"})
    assert (await tab.receive_json_from())["type"] == "pong"

    # Reader one closes its first tab: still online through the other, gone from the room.
    await one.disconnect()
    frame = await two.receive_json_from()
    assert (frame["type"], frame["count"], frame["left"]) == ("room", 1, [hello_one["reader"]])
    assert await two.receive_nothing(0.1)  # still 2 online: no `online` frame
    await tab.disconnect()
    assert await two.receive_json_from() == {"type": "online", "count": 1}
