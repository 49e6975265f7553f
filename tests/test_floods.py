"""Floods: made-up room names never create state, and the per-address caps on readers and connections.

Already proven elsewhere, not repeated here:

- over the frame rate -> ``rate_limited``, still flooding 5 s later -> close 4008:
  ``tests/test_consumer.py::test_rate_limit_then_close_4008`` (and ``..._forgives_a_client_that_calms_down``);
- joining rooms in a loop -> ``too_many_rooms``: ``tests/test_consumer.py::test_too_many_rooms``.

- the caps with real Daphne processes, one and two, with and without a proxy in front:
  ``tests/test_hostile.py``.

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

from presence import addresses, protocol, rooms
from presence.conf import app_settings
from presence.connections import TooManyConnections
from presence.hub import Hub
from presence.routing import websocket_application

pytestmark = [pytest.mark.django_db(transaction=True)]

# Ten times the room cache's bound (lowered for the test from its default of 10,000: the bound, not
# its size, is what is tested, and each made-up name of a known kind costs a database lookup).
INVALID_JOINS = 10_000
THROUGH_THE_CONSUMER = 1_000
ROOM_CACHE_SIZE = 1_000


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
async def test_made_up_room_names_never_create_state(ws, hub, articles, request, settings):
    settings.PRESENCE_ROOM_CACHE_SIZE = ROOM_CACHE_SIZE
    real = f"article:{articles[0].pk}"
    reader = await ws(session="honestreader")
    await reader.receive_json_from()
    await reader.send_json_to({"type": "join", "room": real})
    assert (await reader.receive_json_from())["count"] == 1
    existing = {f"article:{a.pk}" for a in articles}
    names = made_up_rooms(INVALID_JOINS, seed=6, existing=existing)
    assert len(names) >= INVALID_JOINS - 10

    # A thousand through the WebSocket, pipelined (rate limit lifted: it is not what is tested).
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
        assert len(rooms.cache) <= app_settings.ROOM_CACHE_SIZE
    assert refused == len(names) - THROUGH_THE_CONSUMER
    await hub.unregister(conn, "closed")

    assert len(rooms.cache) == app_settings.ROOM_CACHE_SIZE == ROOM_CACHE_SIZE  # it filled, and stayed at its bound
    assert (await store_size(hub, request), await hub.store.ranking(100), await hub.store.online()) == before
    assert set(hub.rooms) == hub_rooms_before == {real}
    await flooder.send_json_to({"type": "ping"})
    assert (await flooder.receive_json_from())["type"] == "pong"


async def _ignore(*args) -> None:
    return None


# -- PRESENCE_MAX_READERS_PER_IP and PRESENCE_MAX_CONNECTIONS_PER_IP ------------------------------


@pytest.fixture
async def connect_from(hub):
    """``await connect_from("10.0.0.1", session)`` -> (accepted, communicator), with the scope's client address set."""
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


async def test_distinct_readers_per_address_are_capped_and_released(hub, connect_from):
    with override_settings(PRESENCE_MAX_READERS_PER_IP=2, PRESENCE_MAX_CONNECTIONS_PER_IP=5):
        key = addresses.address_key("10.0.0.1")
        ok1, a1 = await connect_from("10.0.0.1", "readerone01")
        ok2, a2 = await connect_from("10.0.0.1", "readertwo02")
        assert ok1 and ok2
        ok3, a3 = await connect_from("10.0.0.1", "readerthree")
        assert not ok3  # a third reader: closed before accept (HTTP 403 from a server)
        ok_tab, tab = await connect_from("10.0.0.1", "readerone01")
        assert ok_tab  # a second tab of a counted reader is no new reader
        ok_other, other = await connect_from("10.0.0.2", "readerthree")
        assert ok_other  # another address has its own allowance
        await a3.disconnect()  # the refused one's disconnect frees nothing it never held
        assert await hub.store.admitted(key) == (2, 3)
        assert not any("10.0.0" in k for k, _ in hub.admissions.counted)  # only keyed hashes are kept

        await a2.disconnect()  # a reader's slot comes back when its last connection closes
        ok4, a4 = await connect_from("10.0.0.1", "readerthree")
        assert ok4
        assert (await a4.receive_json_from())["type"] == "hello"
        for client in (a1, tab, a4, other):
            await client.disconnect()
    assert hub.admissions.counted == {} and await hub.store.admitted(key) == (0, 0)


async def test_connections_per_address_are_capped(hub, connect_from):
    with override_settings(PRESENCE_MAX_READERS_PER_IP=None, PRESENCE_MAX_CONNECTIONS_PER_IP=3):
        tabs = [await connect_from("10.0.0.5", "manytabs0001") for _ in range(4)]
        assert [ok for ok, _ in tabs] == [True, True, True, False]
        assert not (await connect_from("10.0.0.5", "anotherone01"))[0]
        await tabs[0][1].disconnect()
        assert (await connect_from("10.0.0.5", "anotherone01"))[0]


async def test_caps_are_on_by_default(hub, connect_from):
    """50 readers, 200 connections (docs/security.md, "The per-address caps"): a script's 60
    random sessions from one address make 50 readers; one browser's 250 tabs, 200 connections."""
    assert (app_settings.MAX_READERS_PER_IP, app_settings.MAX_CONNECTIONS_PER_IP) == (50, 200)
    accepted = [(await connect_from("10.0.0.9", session=f"randomsess{n:02d}"))[0] for n in range(60)]
    assert accepted.count(True) == 50 and accepted[50:] == [False] * 10
    assert await hub.store.online() == 50
    accepted = [(await connect_from("10.0.0.10", session="onebrowser01"))[0] for _ in range(201)]
    assert accepted.count(True) == 200 and not accepted[-1]


async def test_identify_as_a_reader_the_address_has_no_room_for_closes_4029(hub, connect_from):
    with override_settings(PRESENCE_MAX_READERS_PER_IP=2):
        ok, first = await connect_from("10.0.0.7", "firstreader1")
        ok2, second = await connect_from("10.0.0.7", "secondreader")
        assert ok and ok2
        for client in (first, second):
            await client.receive_json_from()
        # Re-keying to a reader already counted there, or to one taking the old one's place, is fine.
        await second.send_json_to({"type": "identify", "session": "firstreader1"})
        assert (await second.receive_json_from())["type"] == "hello"
        await second.send_json_to({"type": "identify", "session": "secondreader"})
        assert (await second.receive_json_from())["type"] == "hello"
        ok3, third = await connect_from("10.0.0.7", "secondreader")  # a tab of a counted reader
        assert ok3
        await third.receive_json_from()
        # A third reader from a full address: the connection is closed with 4029.
        await third.send_json_to({"type": "identify", "session": "thirdreader1"})
        assert await third.receive_output() == {"type": "websocket.close", "code": protocol.CLOSE_TOO_MANY_READERS}
        assert await hub.store.online() == 2
        assert await hub.store.admitted(addresses.address_key("10.0.0.7")) == (2, 2)


async def test_the_caps_are_site_wide_not_per_process(store_factory, clock):
    """Two hubs (two server processes) on one store: an address holds the caps across both."""
    hubs = [Hub(store=store_factory(f"cap-proc-{n}"), autotick=False, clock=clock) for n in range(2)]
    try:
        with override_settings(PRESENCE_MAX_READERS_PER_IP=3, PRESENCE_MAX_CONNECTIONS_PER_IP=4):
            admitted = []
            for n in range(8):
                try:
                    admitted.append(await hubs[n % 2].admit("10.1.1.1", f"anon:sitewide{n:04d}"))
                except TooManyConnections:
                    pass
            assert len(admitted) == 3
            await hubs[1].admit("10.1.1.1", "anon:sitewide0001")  # a known reader's 2nd tab
            with pytest.raises(TooManyConnections):  # the 5th connection, whichever process
                await hubs[0].admit("10.1.1.1", "anon:sitewide0000")
            await hubs[0].dismiss(admitted[0])
            assert await hubs[1].admit("10.1.1.1", "anon:sitewide0007")
            # A process that dies: its readers' slots come back when the other reaps it.
            clock.advance(app_settings.PROCESS_TTL + 1)
            await hubs[1]._beat()
            key = addresses.address_key("10.1.1.1")
            assert await hubs[1].store.admitted(key) == (2, 3)
    finally:
        for hub_ in hubs:
            await hub_.stop()


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
        ok, again = await connect_from("10.0.0.3")  # a connection the server closed counts no more
        assert ok
        assert not (await connect_from("10.0.0.3"))[0]
        await flooder.disconnect()  # its disconnect does not free the slot a second time
        assert not (await connect_from("10.0.0.3"))[0]
        await again.disconnect()
    assert hub.admissions.counted == {}


async def test_a_connection_without_a_client_address_is_not_counted(hub, connect_from):
    with override_settings(PRESENCE_MAX_CONNECTIONS_PER_IP=1, PRESENCE_MAX_READERS_PER_IP=1):
        clients = [await connect_from(None, session=f"unixsocket0{n}") for n in range(3)]
        assert all(ok for ok, _ in clients)
        assert hub.admissions.counted == {}
        for _, client in clients:
            await client.disconnect()
