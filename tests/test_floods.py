"""Floods: made-up room names never create state, and the per-address connection cap.

Already proven elsewhere, not repeated here:

- over the frame rate -> ``rate_limited``, still flooding 5 s later -> close 4008:
  ``tests/test_consumer.py::test_rate_limit_then_close_4008`` (and ``..._forgives_a_client_that_calms_down``);
- joining rooms in a loop -> ``too_many_rooms``: ``tests/test_consumer.py::test_too_many_rooms``.

Both store backends; the hub's clock is injected, nothing sleeps.
"""

from __future__ import annotations

import contextlib
import json
import random
import string

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from presence import rooms
from presence.conf import app_settings
from presence.routing import websocket_application

pytestmark = [pytest.mark.django_db(transaction=True)]

INVALID_JOINS = 100_000
THROUGH_THE_CONSUMER = 3_000


def made_up_rooms(count: int, seed: int, existing: set[str]) -> list[str]:
    """Room names a flooder would try: malformed, unknown kinds, well-formed but naming nothing."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "_-"
    names = []
    for n in range(count):
        key = "".join(rng.choices(alphabet, k=rng.randint(1, 64)))
        kind = n % 6
        if kind == 0:
            name = f"article:{key} "  # malformed
        elif kind == 1:
            name = f"nosuch{n % 97}:{key}"  # unknown kind
        elif kind == 2:
            name = "".join(rng.choices(string.printable, k=rng.randint(0, 80)))  # garbage
        elif kind == 3 and n % 30 == 3:
            name = f"article:{rng.randint(10**6, 10**12)}"  # numeric: a database lookup that finds nothing
        else:
            name = f"article:x{key[:63]}"  # well-formed, not a pk: refused without a query
        if name not in existing:
            names.append(name)
    return names


async def store_size(hub, request) -> dict[str, int]:
    """How much the store holds: its structures (memory) or its keys under the test prefix (Redis)."""
    store = hub.store
    if hasattr(store, "state"):
        state = store.state
        return {
            "rooms": len(state.rooms),
            "online": len(state.online),
            "proc_rooms": sum(len(v) for v in state.proc_rooms.values()),
            "proc_online": sum(len(v) for v in state.proc_online.values()),
            "readers": sum(len(r.readers) for r in state.rooms.values()),
        }
    # Through the store's own client, so that a cluster is scanned node by node.
    client = store._client()
    keys = [k async for k in client.scan_iter(match=f"{store.prefix}*", count=1000)]
    # A heartbeat may refresh the process zset's score but never adds keys.
    return {"keys": len(keys), "rank": await client.zcard(f"{store.prefix}:{{g}}:rank")}


@pytest.mark.slow
# Refusing names happens before the store: one Redis is enough (the cluster: tests/test_store.py).
@pytest.mark.parametrize("store_factory", ["memory", pytest.param("redis", marks=pytest.mark.redis)], indirect=True)
async def test_made_up_room_names_never_create_state(ws, hub, articles, request):
    real = f"article:{articles[0].pk}"
    reader = await ws(session="honestreader")
    await reader.receive_json_from()
    await reader.send_json_to({"type": "join", "room": real})
    assert (await reader.receive_json_from())["count"] == 1
    existing = {f"article:{a.pk}" for a in articles}
    names = made_up_rooms(INVALID_JOINS, seed=6, existing=existing)
    assert len(names) >= INVALID_JOINS - 10

    # A few thousand through the WebSocket, pipelined (rate limit lifted: it is not what is tested).
    with override_settings(PRESENCE_RATE=1e9, PRESENCE_BURST=10**9):  # read when the connection opens
        flooder = await ws(session="floodernames")
        await flooder.receive_json_from()
        before = (await store_size(hub, request), await hub.store.ranking(100), await hub.store.online())
        hub_rooms_before = set(hub.rooms)
        sent = names[:THROUGH_THE_CONSUMER]
        for name in sent:
            await flooder.send_to(text_data=json.dumps({"type": "join", "room": name}))
        codes = [(await flooder.receive_json_from(timeout=10))["code"] for _ in sent]
    assert set(codes) == {"invalid_room"}, set(codes)

    # The rest straight to the hub, as the consumer calls it.
    conn, _ = await hub.register("anon:floodernames", send=_ignore, close=_ignore)  # the flooder's 2nd tab
    refused = 0
    for name in names[THROUGH_THE_CONSUMER:]:
        try:
            await hub.join(conn, name)
        except Exception as exc:  # noqa: BLE001 - counted below
            assert exc.__class__.__name__ == "InvalidRoom", exc
            refused += 1
        assert len(rooms._cache) <= app_settings.ROOM_CACHE_SIZE
    assert refused == len(names) - THROUGH_THE_CONSUMER
    await hub.unregister(conn, "closed")

    assert len(rooms._cache) <= app_settings.ROOM_CACHE_SIZE == 10_000
    assert len(rooms._cache) == app_settings.ROOM_CACHE_SIZE  # it filled, and stayed at its bound
    assert (await store_size(hub, request), await hub.store.ranking(100), await hub.store.online()) == before
    assert set(hub.rooms) == hub_rooms_before == {real}
    await flooder.send_json_to({"type": "ping"})
    assert (await flooder.receive_json_from())["type"] == "pong"


async def _ignore(*args) -> None:
    return None


# -- PRESENCE_MAX_CONNECTIONS_PER_IP -----------------------------------------------------------


@pytest.fixture
async def connect_from(hub):
    """``await connect_from("10.0.0.1")`` -> (accepted, communicator), with the scope's client address set."""
    app = websocket_application()
    opened = []

    async def connect(address: str | None, session: str = "capsession01"):
        client = WebsocketCommunicator(app, f"/ws/presence/?session={session}", headers=[(b"origin", b"http://localhost")])
        if address is not None:
            client.scope["client"] = (address, 40000 + len(opened))
        accepted, _ = await client.connect()
        opened.append(client)
        return accepted, client

    yield connect
    for client in opened:
        with contextlib.suppress(BaseException):
            await client.disconnect()


async def test_connections_per_address_are_capped_and_released(hub, connect_from):
    with override_settings(PRESENCE_MAX_CONNECTIONS_PER_IP=2):
        (ok1, a1), (ok2, a2) = await connect_from("10.0.0.1"), await connect_from("10.0.0.1")
        assert ok1 and ok2
        ok3, a3 = await connect_from("10.0.0.1")
        assert not ok3  # closed before accept: HTTP 403 from a server
        ok_other, other = await connect_from("10.0.0.2")
        assert ok_other  # another address has its own allowance
        await a3.disconnect()  # the refused one's disconnect must not free a slot it never held
        ok4, a4 = await connect_from("10.0.0.1")
        assert not ok4
        await a4.disconnect()
        assert sorted(hub.per_address.values()) == [1, 2]
        assert not any("10.0.0" in key for key in hub.per_address)  # only keyed hashes are kept

        await a1.disconnect()  # a slot comes back when a connection closes
        ok5, a5 = await connect_from("10.0.0.1")
        assert ok5
        assert (await a5.receive_json_from())["type"] == "hello"
        for client in (a2, a5, other):
            await client.disconnect()
    assert hub.per_address == {}


async def test_no_cap_by_default(hub, connect_from):
    assert app_settings.MAX_CONNECTIONS_PER_IP is None
    clients = [await connect_from("10.0.0.9", session=f"nocapsession{n}") for n in range(12)]
    assert all(ok for ok, _ in clients)
    assert hub.per_address == {}
    for _, client in clients:
        await client.disconnect()


async def test_a_flooder_closed_with_4008_frees_its_slot(hub, connect_from, clock):
    with override_settings(PRESENCE_MAX_CONNECTIONS_PER_IP=1):
        ok, flooder = await connect_from("10.0.0.3")
        assert ok
        await flooder.receive_json_from()
        for _ in range(400):
            clock.advance(0.02)
            await flooder.send_json_to({"type": "ping"})
            reply = await flooder.receive_output()
            if reply["type"] == "websocket.close":
                break
        assert reply == {"type": "websocket.close", "code": 4008}
        assert not (await connect_from("10.0.0.3"))[0]  # not until the socket is really closed
        await flooder.disconnect()
        ok, again = await connect_from("10.0.0.3")
        assert ok
        await again.disconnect()
    assert hub.per_address == {}


async def test_a_connection_without_a_client_address_is_not_counted(hub, connect_from):
    with override_settings(PRESENCE_MAX_CONNECTIONS_PER_IP=1):
        clients = [await connect_from(None, session=f"unixsocket0{n}") for n in range(3)]
        assert all(ok for ok, _ in clients)
        assert hub.per_address == {}
        for _, client in clients:
            await client.disconnect()
