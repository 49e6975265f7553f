"""The wire protocol (docs/protocol.md), row by row, through Channels' WebsocketCommunicator.

Every test runs against both store backends. The hub's clock is injected and ticks are
driven by the test, so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import json
from unittest import mock

import pytest
from django.core import signing
from django.test import override_settings

from presence import events, identity, rooms
from presence.errors import InvalidToken
from tests.conftest import PatientCommunicator

pytestmark = [pytest.mark.django_db(transaction=True)]


async def settle(client) -> None:
    """Wait until the server has handled every frame this client sent (frames are handled in order)."""
    await client.send_json_to({"type": "ping", "ref": "settle"})
    while (await client.receive_json_from()).get("type") != "pong":
        pass


async def drain(*clients) -> None:
    """Read and drop whatever the clients were sent so far."""
    for client in clients:
        while not await client.receive_nothing(timeout=0.05):
            await client.receive_output()


# -- identity and dedup ---------------------------------------------------------------


async def test_hello_on_connect(ws, clock):
    client = await ws(session="sessionaaaa1")
    hello = await client.receive_json_from()
    assert hello["type"] == "hello"
    assert hello["online"] == 1
    assert hello["heartbeat"] == 20
    assert hello["server_time"] == int(clock() * 1000)
    assert hello["reader"] == identity.reader_id("anon:sessionaaaa1")
    assert "sessionaaaa1" not in json.dumps(hello)


async def test_tabs_of_one_browser_count_once(ws, hub):
    a = await ws(session="samebrowser1")
    b = await ws(session="samebrowser1")
    hello_a, hello_b = await a.receive_json_from(), await b.receive_json_from()
    assert hello_a["reader"] == hello_b["reader"]
    assert hello_b["online"] == 1
    c = await ws(session="otherbrowser")
    assert (await c.receive_json_from())["online"] == 2
    await hub.tick()
    await a.receive_nothing()  # one reading: the count is sent once it held for two
    await hub.tick()
    assert await a.receive_json_from() == {"type": "online", "count": 2}
    assert await b.receive_json_from() == {"type": "online", "count": 2}
    await c.receive_nothing()  # its hello already said 2: no repeat


async def test_missing_or_malformed_session_counts_the_connection_alone(ws):
    a = await ws()
    b = await ws(session="short")
    ra, rb = (await a.receive_json_from())["reader"], (await b.receive_json_from())["reader"]
    assert ra != rb
    c = await ws(session="bad session!")
    assert (await c.receive_json_from())["online"] == 3


async def test_signed_in_user_is_the_user_whatever_session_says(ws, user_cookie):
    cookie = await user_cookie("alice")
    a = await ws(session="sessionalice1", cookie=cookie)
    b = await ws(session="sessionalice2", cookie=cookie)
    hello_a, hello_b = await a.receive_json_from(), await b.receive_json_from()
    assert hello_a["reader"] == hello_b["reader"] != identity.reader_id("anon:sessionalice1")
    assert hello_b["online"] == 1


async def test_identify_with_token_merges_anonymous_tab_into_user(ws, user_cookie, make_user, user_token):
    user = await make_user("bob")
    cookie = await user_cookie("bob")
    signed_in = await ws(session="bobsession01", cookie=cookie)
    anon = await ws(session="anonsession1")
    reader = (await signed_in.receive_json_from())["reader"]
    assert (await anon.receive_json_from())["online"] == 2
    await anon.send_json_to({"type": "identify", "token": await user_token(user)})
    hello = await anon.receive_json_from()
    assert hello == {**hello, "type": "hello", "reader": reader, "online": 1}


async def test_identify_with_new_session_rekeys_and_keeps_rooms(ws, hub, article):
    client = await ws(session="firstsession")
    watcher = await ws(session="watchersess1")
    old_site = (await client.receive_json_from())["reader"]
    await watcher.receive_json_from()
    room = f"article:{article.pk}"
    ids = {}
    for c in (client, watcher):
        await c.send_json_to({"type": "join", "room": room})
        ids[c] = (await c.receive_json_from())["you"]
    old = ids[client]
    await client.send_json_to({"type": "progress", "room": room, "position": 0.5})
    await settle(client)
    await hub.tick()
    await drain(watcher, client)
    await client.send_json_to({"type": "identify", "session": "secondsession"})
    hello = await client.receive_json_from()
    assert hello["reader"] == identity.reader_id("anon:secondsession") != old_site
    # Protocol 1.1: a new room_state for each joined room tells the connection its new id there.
    state = await client.receive_json_from()
    new = identity.reader_id("anon:secondsession", room)
    assert (state["type"], state["room"], state["you"]) == ("room_state", room, new)
    assert new not in (old, hello["reader"])
    assert [(r["id"], r["position"]) for r in state["readers"] if r["id"] == new] == [(new, 0.5)]
    await hub.tick()
    frame = await watcher.receive_json_from()
    assert frame["count"] == 2
    assert frame["left"] == [old]
    assert [(u["id"], u["position"]) for u in frame["updates"]] == [(new, 0.5)]


@pytest.mark.parametrize(
    "token",
    ["not-a-token", "", 42, "x" * 600, "bad\u00e9token"],
)
async def test_identify_with_garbage_token(ws, token):
    client = await ws(session="tokensession")
    await client.receive_json_from()
    await client.send_json_to({"type": "identify", "token": token, "ref": "t1"})
    reply = await client.receive_json_from()
    assert reply["type"] == "error"
    assert reply["code"] == ("bad_message" if not isinstance(token, str) else "invalid_token")
    assert reply["ref"] == "t1"


async def test_forged_expired_and_other_site_tokens_are_refused(ws, make_user, user_token):
    user = await make_user("carol")
    client = await ws(session="carolsession")
    before = (await client.receive_json_from())["reader"]
    good = await user_token(user)
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    with override_settings(SECRET_KEY="another-site-entirely-" + "x" * 40):
        other_site = await user_token(user)
    with mock.patch("time.time", return_value=1_000_000.0):
        expired = await user_token(user)
    unsigned = signing.dumps({"u": str(user.pk)}, salt="some.other.salt")
    for token in (forged, other_site, expired, unsigned):
        await client.send_json_to({"type": "identify", "token": token})
        reply = await client.receive_json_from()
        assert reply["code"] == "invalid_token", token
    await client.send_json_to({"type": "ping"})
    assert (await client.receive_json_from())["type"] == "pong"
    with pytest.raises(InvalidToken):
        await identity.identity_from_token(expired)
    # Still the anonymous reader it was.
    await client.send_json_to({"type": "identify", "session": "carolsession"})
    assert (await client.receive_json_from())["reader"] == before


async def test_identify_with_malformed_session_is_bad_message(ws):
    client = await ws(session="okaysession1")
    await client.receive_json_from()
    for frame in (
        {"type": "identify", "session": "short"},
        {"type": "identify", "session": 12345678},
        {"type": "identify"},
        {"type": "identify", "session": "okaysession2", "token": "x"},
    ):
        await client.send_json_to(frame)
        assert (await client.receive_json_from())["code"] == "bad_message"


# -- rooms ----------------------------------------------------------------------------


async def test_join_answers_room_state_including_self(ws, article):
    client = await ws(session="joinsession1")
    reader = (await client.receive_json_from())["reader"]
    room = f"article:{article.pk}"
    await client.send_json_to({"type": "join", "room": room})
    state = await client.receive_json_from()
    assert state["type"] == "room_state"
    assert state["room"] == room
    assert state["count"] == 1
    # Protocol 1.1: "you" is the reader's id in this room, never its site id from `hello`.
    assert state["you"] == identity.reader_id("anon:joinsession1", room) != reader
    assert [r["id"] for r in state["readers"]] == [state["you"]]
    assert state["readers"][0]["position"] is None
    assert state["histogram"] == [1] + [0] * 19


async def test_join_twice_is_idempotent(ws, article, hub):
    client = await ws(session="twicesession")
    await client.receive_json_from()
    room = f"article:{article.pk}"
    for _ in range(2):
        await client.send_json_to({"type": "join", "room": room})
        assert (await client.receive_json_from())["count"] == 1
    assert len(hub.connections.pop().rooms) == 1


@pytest.mark.parametrize("room", ["article:999999", "nosuchkind:1", "article", "article:", ":1", "article:1:2",
                                  "article:ab cd", 42, None, "ARTICLE:1", "article:" + "9" * 65])
async def test_invalid_rooms_are_refused_and_create_nothing(ws, hub, room):
    client = await ws(session="roomsession1")
    await client.receive_json_from()
    await client.send_json_to({"type": "join", "room": room, "ref": "r"})
    reply = await client.receive_json_from()
    assert reply["type"] == "error"
    assert reply["code"] == ("invalid_room" if isinstance(room, str) else "bad_message")
    assert await hub.store.ranking(10) == []
    assert hub.rooms == {}


async def test_rooms_keyed_by_slug_when_configured(ws, article):
    with override_settings(PRESENCE_ROOM_KINDS={"post": {"model": "blog.Article", "field": "slug"}}):
        client = await ws(session="slugsession1")
        await client.receive_json_from()
        await client.send_json_to({"type": "join", "room": f"post:{article.slug}"})
        assert (await client.receive_json_from())["count"] == 1
        await client.send_json_to({"type": "join", "room": f"article:{article.pk}"})
        assert (await client.receive_json_from())["code"] == "invalid_room"


async def test_room_resolution_is_cached(ws, article):
    room = f"article:{article.pk}"
    first = await ws(session="cachesessio1")
    await first.receive_json_from()
    await first.send_json_to({"type": "join", "room": room})
    await first.receive_json_from()
    with mock.patch.object(rooms, "_fetch_async", wraps=rooms._fetch_async) as lookups:
        for n in range(3):
            client = await ws(session=f"cachesessio{n + 2}")
            await client.receive_json_from()
            await client.send_json_to({"type": "join", "room": room})
            assert (await client.receive_json_from())["count"] == n + 2
        await client.send_json_to({"type": "join", "room": "article:424242"})
        assert (await client.receive_json_from())["code"] == "invalid_room"
        await client.send_json_to({"type": "join", "room": "article:424242"})
        assert (await client.receive_json_from())["code"] == "invalid_room"
    assert lookups.call_count == 1  # only the unknown article, once: refusals are cached too


async def test_per_room_counts_are_distinct_readers(ws, articles, hub):
    one, two = (f"article:{a.pk}" for a in articles[:2])
    a1 = await ws(session="readerAAAAAA")
    a2 = await ws(session="readerAAAAAA")
    b = await ws(session="readerBBBBBB")
    for c in (a1, a2, b):
        await c.receive_json_from()
    await a1.send_json_to({"type": "join", "room": one})
    await a1.receive_json_from()
    await a2.send_json_to({"type": "join", "room": one})
    assert (await a2.receive_json_from())["count"] == 1  # same reader, second tab
    await a2.send_json_to({"type": "join", "room": two})
    assert (await a2.receive_json_from())["count"] == 1
    await b.send_json_to({"type": "join", "room": one})
    assert (await b.receive_json_from())["count"] == 2
    assert await hub.store.counts([one, two]) == {one: 2, two: 1}
    assert await hub.store.ranking(10) == [(one, 2), (two, 1)]


async def test_leave_sends_left_and_frees_the_slot(ws, article, hub):
    room = f"article:{article.pk}"
    a, b = await ws(session="leaverAAAAAA"), await ws(session="stayerBBBBBB")
    await a.receive_json_from()
    await b.receive_json_from()
    you = {}
    for c in (a, b):
        await c.send_json_to({"type": "join", "room": room})
        you[c] = (await c.receive_json_from())["you"]
    reader_a = you[a]
    await hub.tick()
    await hub.tick()  # two readings of the online count: a is sent 2
    await drain(a, b)
    await a.send_json_to({"type": "leave", "room": room})
    await settle(a)
    await hub.tick()
    frame = await b.receive_json_from()
    assert frame == {"type": "room", "room": room, "count": 1, "updates": [], "left": [reader_a]}
    await a.send_json_to({"type": "leave", "room": room, "ref": "again"})
    assert await a.receive_json_from() == {"type": "error", "code": "not_joined", "ref": "again",
                                           "message": mock.ANY}


async def test_a_reader_with_two_tabs_leaves_only_when_both_do(ws, article, hub):
    room = f"article:{article.pk}"
    tab1, tab2, other = [await ws(session=s) for s in ("twotabs00001", "twotabs00001", "observer0001")]
    for c in (tab1, tab2, other):
        await c.receive_json_from()
        await c.send_json_to({"type": "join", "room": room})
        await c.receive_json_from()
    await hub.tick()
    await other.receive_json_from()
    await tab1.send_json_to({"type": "leave", "room": room})
    await hub.tick()
    await other.receive_nothing()  # still reading in tab 2: nothing changed
    await tab2.disconnect()
    await hub.tick()
    frame = await other.receive_json_from()
    assert frame["count"] == 1 and len(frame["left"]) == 1


async def test_too_many_rooms(ws, articles):
    client = await ws(session="greedysessio")
    await client.receive_json_from()
    for a in articles[:10]:
        await client.send_json_to({"type": "join", "room": f"article:{a.pk}"})
        assert (await client.receive_json_from())["type"] == "room_state"
    extra = f"article:{articles[10].pk}"
    await client.send_json_to({"type": "join", "room": extra, "ref": "11"})
    assert (await client.receive_json_from())["code"] == "too_many_rooms"
    await client.send_json_to({"type": "join", "room": f"article:{articles[0].pk}"})
    assert (await client.receive_json_from())["type"] == "room_state"  # already joined: no slot used
    await client.send_json_to({"type": "leave", "room": f"article:{articles[0].pk}"})
    await client.send_json_to({"type": "join", "room": extra})
    assert (await client.receive_json_from())["type"] == "room_state"  # leaving freed the slot


# -- live ranking (extension) -----------------------------------------------------------


async def rankings(client) -> list[list[dict]]:
    """The `ranking` frames this client was sent so far (other frames dropped)."""
    seen = []
    while not await client.receive_nothing(timeout=0.05):
        frame = await client.receive_json_from()
        if frame["type"] == "ranking":
            seen.append(frame["rooms"])
    return seen


def entry(article, count: int) -> dict:
    return {"room": f"article:{article.pk}", "count": count, "title": article.title, "url": article.get_absolute_url()}


async def test_ranking_answers_at_once_and_includes_your_own_join(ws, articles):
    other = await ws(session="rankotherAAA")
    await other.receive_json_from()
    await other.send_json_to({"type": "join", "room": f"article:{articles[1].pk}"})
    await other.receive_json_from()
    client = await ws(session="rankclientAA")
    await client.receive_json_from()
    await client.send_json_to({"type": "join", "room": f"article:{articles[0].pk}"})
    await client.receive_json_from()
    await client.send_json_to({"type": "ranking", "limit": 5})
    frame = await client.receive_json_from()
    assert frame["type"] == "ranking"
    assert sorted(frame["rooms"], key=lambda e: e["room"]) == sorted(
        [entry(articles[0], 1), entry(articles[1], 1)], key=lambda e: e["room"]
    )


async def test_ranking_frames_only_on_change_and_at_most_once_a_second(ws, articles, hub, clock):
    watcher = await ws(session="rankwatcher1")
    await watcher.receive_json_from()
    await watcher.send_json_to({"type": "ranking", "limit": 5})
    assert (await watcher.receive_json_from()) == {"type": "ranking", "rooms": []}
    reader = await ws(session="rankreaderA1")
    await reader.receive_json_from()
    await reader.send_json_to({"type": "join", "room": f"article:{articles[0].pk}"})
    await reader.receive_json_from()
    await hub.tick()
    assert await rankings(watcher) == [[entry(articles[0], 1)]]
    await hub.tick()
    clock.advance(1.0)
    await hub.tick()
    assert await rankings(watcher) == []  # nothing changed: no frame
    second = await ws(session="rankreaderB1")
    await second.receive_json_from()
    await second.send_json_to({"type": "join", "room": f"article:{articles[0].pk}"})
    await second.receive_json_from()
    clock.advance(0.5)
    await hub.tick()
    assert await rankings(watcher) == []  # half a second after the last one: not yet
    clock.advance(0.5)
    await hub.tick()
    assert await rankings(watcher) == [[entry(articles[0], 2)]]
    await second.send_json_to({"type": "leave", "room": f"article:{articles[0].pk}"})
    await settle(second)
    clock.advance(1.0)
    await hub.tick()
    assert await rankings(watcher) == [[entry(articles[0], 1)]]


async def test_one_store_call_per_tick_whatever_the_number_of_subscribers(ws, articles, hub, clock):
    watchers = []
    for n in range(6):
        client = await ws(session=f"rankmany{n:04d}")
        await client.receive_json_from()
        await client.send_json_to({"type": "ranking", "limit": 1 + n % 3})
        await client.receive_json_from()
        watchers.append(client)
    reader = await ws(session="rankreaderC1")
    await reader.receive_json_from()
    for a in articles[:2]:
        await reader.send_json_to({"type": "join", "room": f"article:{a.pk}"})
        await reader.receive_json_from()
    clock.advance(1.0)
    with (
        mock.patch.object(hub.store, "ranking", wraps=hub.store.ranking) as calls,
        mock.patch.object(rooms, "_fetch_async", wraps=rooms._fetch_async) as lookups,
    ):
        await hub.tick()
    assert calls.call_count == 1
    assert lookups.call_count == 0  # the joins resolved both rooms: cached
    for n, client in enumerate(watchers):
        [ranked] = await rankings(client)
        assert len(ranked) == min(2, 1 + n % 3)


async def test_a_change_below_your_limit_sends_you_nothing(ws, articles, hub, clock):
    top, full = await ws(session="ranktopone01"), await ws(session="rankfullfive")
    a, b = await ws(session="rankreaderD1"), await ws(session="rankreaderD2")
    for client in (top, full, a, b):
        await client.receive_json_from()
    for client, article in ((a, articles[0]), (b, articles[0])):
        await client.send_json_to({"type": "join", "room": f"article:{article.pk}"})
        await client.receive_json_from()
    await top.send_json_to({"type": "ranking", "limit": 1})
    await full.send_json_to({"type": "ranking", "limit": 5})
    await top.receive_json_from()
    await full.receive_json_from()
    await b.send_json_to({"type": "join", "room": f"article:{articles[1].pk}"})
    await b.receive_json_from()
    clock.advance(1.0)
    await hub.tick()
    assert await rankings(full) == [[entry(articles[0], 2), entry(articles[1], 1)]]
    assert await rankings(top) == []


async def test_rooms_that_no_longer_resolve_are_left_out(ws, articles, hub):
    from asgiref.sync import sync_to_async

    client = await ws(session="rankgoneAAAA")
    await client.receive_json_from()
    for a in articles[:2]:
        await client.send_json_to({"type": "join", "room": f"article:{a.pk}"})
        await client.receive_json_from()
    await sync_to_async(articles[1].delete)()
    rooms.cache_clear()
    await client.send_json_to({"type": "ranking", "limit": 1})
    assert (await client.receive_json_from())["rooms"] == [entry(articles[0], 1)]


@pytest.mark.parametrize("frame", [
    {"type": "ranking"}, {"type": "ranking", "limit": 0}, {"type": "ranking", "limit": 51},
    {"type": "ranking", "limit": -1}, {"type": "ranking", "limit": "5"}, {"type": "ranking", "limit": 5.0},
    {"type": "ranking", "limit": True}, {"type": "ranking", "limit": None},
])
async def test_bad_ranking_limits_are_bad_messages(ws, hub, frame):
    client = await ws(session="rankbadlimit")
    await client.receive_json_from()
    await client.send_json_to({**frame, "ref": "r1"})
    reply = await client.receive_json_from()
    assert (reply["type"], reply["code"], reply["ref"]) == ("error", "bad_message", "r1")
    assert len(hub.ranking_feed) == 0


async def test_a_closed_connection_is_no_longer_subscribed(ws, hub):
    client = await ws(session="rankclosedAA")
    await client.receive_json_from()
    await client.send_json_to({"type": "ranking", "limit": 3})
    await client.receive_json_from()
    assert len(hub.ranking_feed) == 1
    await client.disconnect()
    assert len(hub.ranking_feed) == 0


# -- progress, coalescing, histogram ----------------------------------------------------


async def test_progress_frames_within_a_tick_coalesce_into_one_room_frame(ws, article, hub, clock):
    room = f"article:{article.pk}"
    reader, watcher = await ws(session="scrollerAAAA"), await ws(session="watcherBBBBB")
    await reader.receive_json_from()
    await watcher.receive_json_from()
    you = {}
    for c in (reader, watcher):
        await c.send_json_to({"type": "join", "room": room})
        you[c] = (await c.receive_json_from())["you"]
    me = you[reader]
    await hub.tick()
    await drain(watcher, reader)
    for i in range(1, 9):
        clock.advance(0.1)
        await reader.send_json_to({"type": "progress", "room": room, "position": i / 10})
        await settle(reader)
    await watcher.receive_nothing()  # nothing fans out per event
    await hub.tick()
    frame = await watcher.receive_json_from()
    assert frame["type"] == "room" and frame["count"] == 2 and frame["left"] == []
    assert [(u["id"], u["position"]) for u in frame["updates"]] == [(me, 0.8)]
    assert frame["updates"][0]["updated_at"] == int(clock() * 1000)
    await watcher.receive_nothing()
    await hub.tick()
    await watcher.receive_nothing()  # nothing changed: no frame


async def test_newest_update_wins_across_tabs(ws, article, hub, clock):
    room = f"article:{article.pk}"
    tab1, tab2 = await ws(session="twotabs00002"), await ws(session="twotabs00002")
    for c in (tab1, tab2):
        await c.receive_json_from()
        await c.send_json_to({"type": "join", "room": room})
        await c.receive_json_from()
    await tab1.send_json_to({"type": "progress", "room": room, "position": 0.9, "name": "Tab one"})
    await settle(tab1)
    clock.advance(0.2)
    await tab2.send_json_to({"type": "progress", "room": room, "position": 0.3})
    await settle(tab2)
    await hub.tick()
    late = await ws(session="latecomer001")
    await late.receive_json_from()
    await late.send_json_to({"type": "join", "room": room})
    state = await late.receive_json_from()
    assert state["count"] == 2
    mine = [r for r in state["readers"] if r["id"] == identity.reader_id("anon:twotabs00002", room)]
    assert len(mine) == 1
    assert mine[0]["position"] == 0.3 and mine[0]["name"] == "Tab one"


async def test_histogram_covers_everyone_and_readers_are_capped(ws, article, hub, clock):
    room = f"article:{article.pk}"
    positions = [0.0, 0.04, 0.05, 0.5, 0.99, 1.0]
    with override_settings(PRESENCE_ROOM_STATE_READERS=3):
        for n, position in enumerate(positions):
            c = await ws(session=f"histogram{n:03d}")
            await c.receive_json_from()
            await c.send_json_to({"type": "join", "room": room})
            await c.receive_json_from()
            clock.advance(1)
            await c.send_json_to({"type": "progress", "room": room, "position": position})
            await settle(c)
        nobody = await ws(session="noposition01")
        await nobody.receive_json_from()
        await nobody.send_json_to({"type": "join", "room": room})
        await nobody.receive_json_from()
        await hub.tick()
        last = await ws(session="histogramend")
        await last.receive_json_from()
        await last.send_json_to({"type": "join", "room": room})
        state = await last.receive_json_from()
    expected = [0] * 20
    for b in (0, 0, 1, 10, 19, 19, 0, 0):  # six positions, then two readers without one
        expected[b] += 1
    assert state["histogram"] == expected
    assert state["count"] == 8
    assert len(state["readers"]) == 3
    updated = [r["updated_at"] for r in state["readers"]]
    assert updated == sorted(updated, reverse=True)


async def test_a_position_of_minus_zero_is_stored_and_sent_as_zero(ws, article, hub):
    room = f"article:{article.pk}"
    writer, watcher = await ws(session="minuszero001"), await ws(session="minuszero002")
    for client in (writer, watcher):
        await client.receive_json_from()
        await client.send_json_to({"type": "join", "room": room})
        await client.receive_json_from()
    await hub.tick()
    await drain(writer, watcher)
    await writer.send_to(text_data=f'{{"type": "progress", "room": "{room}", "position": -0.0}}')
    await settle(writer)
    await hub.tick()
    text = (await watcher.receive_output())["text"]
    assert '"position":0.0' in text and "-0" not in text
    stored = [r.position for r in (await hub.store.room_state(room)).readers if r.position is not None]
    assert [str(p) for p in stored] == ["0.0"]


@pytest.mark.parametrize("position", [-0.01, 1.01, "0.5", None, True, [0.5], 10**400, 1e308 * 10])
async def test_positions_outside_0_1_are_bad_messages(ws, article, hub, position):
    room = f"article:{article.pk}"
    client = await ws(session="badposition1")
    await client.receive_json_from()
    await client.send_json_to({"type": "join", "room": room})
    await client.receive_json_from()
    await client.send_json_to({"type": "progress", "room": room, "position": position})
    assert (await client.receive_json_from())["code"] == "bad_message"
    await hub.tick()
    state = await hub.store.room_state(room)
    assert state.readers[0].position is None


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinity_are_bad_messages(ws, article, literal):
    room = f"article:{article.pk}"
    client = await ws(session="nansession01")
    await client.receive_json_from()
    await client.send_json_to({"type": "join", "room": room})
    await client.receive_json_from()
    await client.send_to(text_data=f'{{"type":"progress","room":"{room}","position":{literal}}}')
    assert (await client.receive_json_from())["code"] == "bad_message"


async def test_progress_for_a_room_not_joined(ws, article):
    client = await ws(session="notjoined001")
    await client.receive_json_from()
    await client.send_json_to({"type": "progress", "room": f"article:{article.pk}", "position": 0.1, "ref": "p"})
    assert await client.receive_json_from() == {"type": "error", "code": "not_joined", "ref": "p",
                                                "message": mock.ANY}


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("  Ada  ", "Ada"),
        ("A\u0000d\u200ba\u202e", "Ada"),
        ("x" * 60, "x" * 40),
        ("é" * 41, "é" * 40),
        ("<b>bold</b>", "<b>bold</b>"),
        ("\u0007\u200d", None),
    ],
)
async def test_names_are_cleaned(ws, article, hub, sent, shown):
    room = f"article:{article.pk}"
    client = await ws(session="namesession1")
    await client.receive_json_from()
    await client.send_json_to({"type": "join", "room": room})
    await client.receive_json_from()
    await client.send_json_to({"type": "progress", "room": room, "position": 0.5, "name": sent})
    await settle(client)
    await hub.tick()
    frame = await client.receive_json_from()
    assert frame["updates"][0]["name"] == shown


# -- errors, limits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '"a string"',
        "{}",
        '{"type": 5}',
        '{"type": "dance"}',
        '{"type": "join"}',
        '{"type": "join", "room": ["article:1"]}',
        '{"type": "ping", "ref": 7}',
        '{"type": "ping", "ref": "' + "r" * 33 + '"}',
        "[" * 3000 + "]" * 3000,
        '{"type": "ping", "pad": "' + "x" * 4100 + '"}',
    ],
)
async def test_malformed_frames_get_bad_message_without_ref(ws, text):
    client = await ws(session="badframes001")
    await client.receive_json_from()
    await client.send_to(text_data=text)
    reply = await client.receive_json_from()
    assert reply["type"] == "error" and reply["code"] == "bad_message" and "ref" not in reply
    await client.send_json_to({"type": "ping"})
    assert (await client.receive_json_from())["type"] == "pong"  # the connection stays open


async def test_binary_frames_are_bad_messages(ws):
    client = await ws(session="binaryframe1")
    await client.receive_json_from()
    await client.send_to(bytes_data=b'{"type": "ping"}')
    assert (await client.receive_json_from())["code"] == "bad_message"


async def test_ref_is_echoed_in_errors(ws):
    client = await ws(session="refsession01")
    await client.receive_json_from()
    await client.send_json_to({"type": "dance", "ref": "r" * 32})
    assert (await client.receive_json_from())["ref"] == "r" * 32


async def test_ping_pong_uses_the_server_clock(ws, clock):
    client = await ws(session="pingsession1")
    await client.receive_json_from()
    clock.advance(7.5)
    await client.send_json_to({"type": "ping", "ref": "x"})
    assert await client.receive_json_from() == {"type": "pong", "server_time": int(clock() * 1000)}


async def test_rate_limit_then_close_4008(ws, clock):
    client = await ws(session="floodsession")
    await client.receive_json_from()
    for _ in range(20):  # the burst
        await client.send_json_to({"type": "ping"})
        assert (await client.receive_json_from())["type"] == "pong"
    await client.send_json_to({"type": "ping", "ref": "over"})
    assert await client.receive_json_from() == {"type": "error", "code": "rate_limited", "ref": "over",
                                                "message": mock.ANY}
    # Keep flooding at 50 frames/s: a frame gets through now and then, the rest are refused.
    results = []
    for _ in range(300):
        clock.advance(0.02)
        await client.send_json_to({"type": "ping"})
        reply = await client.receive_output()
        if reply["type"] == "websocket.close":
            results.append("closed")
            break
        results.append(json.loads(reply["text"]).get("code", "pong"))
    assert results[-1] == "closed"
    assert reply["code"] == 4008
    assert "pong" in results and "rate_limited" in results
    assert 4.9 <= results.index("closed") * 0.02 <= 5.2


async def test_rate_limit_forgives_a_client_that_calms_down(ws, clock):
    client = await ws(session="calmsession1")
    await client.receive_json_from()
    for _ in range(21):
        await client.send_json_to({"type": "ping"})
        await client.receive_json_from()
    for _ in range(10):  # one frame per second for 10 s: never over
        clock.advance(1.0)
        await client.send_json_to({"type": "ping"})
        assert (await client.receive_json_from())["type"] == "pong"


# -- liveness and online frames -------------------------------------------------------------


async def test_silent_connection_is_dropped_and_counted_gone(ws, hub, clock):
    talker, silent = await ws(session="talker000001"), await ws(session="silent000001")
    await talker.receive_json_from()
    await silent.receive_json_from()
    await hub.tick()
    await hub.tick()
    await talker.receive_json_from()  # online 2, held for two readings
    for _ in range(5):  # 50 s: just under 2.5 x 20 s for the silent one
        clock.advance(10)
        await talker.send_json_to({"type": "ping"})
        await talker.receive_json_from()
        await hub.tick()
    await talker.receive_nothing()
    clock.advance(0.5)
    await talker.send_json_to({"type": "ping"})
    await talker.receive_json_from()
    await hub.tick()
    assert (await silent.receive_output())["code"] == 4002
    await hub.tick()
    assert await talker.receive_json_from() == {"type": "online", "count": 1}


async def test_online_frames_at_most_once_per_second_never_repeated(ws, hub, clock):
    watcher = await ws(session="onlinewatch1")
    await watcher.receive_json_from()
    others = []
    for n in range(3):
        others.append(await ws(session=f"churnsession{n}"))
        await others[-1].receive_json_from()
        clock.advance(0.3)
        await hub.tick()
    # A count that moved at every reading is not sent; once it holds for two, it is.
    await watcher.receive_nothing()
    clock.advance(0.1)
    await hub.tick()
    assert await watcher.receive_json_from() == {"type": "online", "count": 4}
    # A change that holds waits for a second after the last frame.
    await others[1].disconnect()
    for _ in range(3):
        clock.advance(0.3)
        await hub.tick()
    await watcher.receive_nothing()
    clock.advance(0.2)
    await hub.tick()
    assert await watcher.receive_json_from() == {"type": "online", "count": 3}
    # The same browser leaving and coming back between two readings changes nothing.
    await others[0].disconnect()
    await ws(session="churnsession0")
    clock.advance(1.1)
    await hub.tick()
    await hub.tick()
    await watcher.receive_nothing()


async def test_a_client_gone_while_its_hello_was_on_its_way_is_not_left_counted(hub):
    """Daphne's ``send`` raises when the client closed meanwhile (autobahn's ``Disconnected``);
    the reader must leave the count when its disconnect follows, not at the silence timeout."""
    from presence.routing import websocket_application

    inbox: asyncio.Queue = asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})

    async def send(message):
        if message["type"] == "websocket.send":
            await inbox.put({"type": "websocket.disconnect", "code": 1006})
            raise ConnectionError("the client went away")

    scope = {"type": "websocket", "path": "/ws/presence/", "query_string": b"session=goneearly001",
             "headers": [(b"origin", b"http://localhost")], "subprotocols": [], "client": ("127.0.0.1", 5000)}
    await asyncio.wait_for(websocket_application()(scope, inbox.get, send), 5)
    assert not hub.connections
    assert await hub.store.online() == 0


# -- handshake --------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [None, b"http://evil.example", b"null"])
async def test_foreign_or_missing_origin_is_refused(ws, origin):
    connected = await ws(session="originsessio", origin=origin, expect_accept=False)
    assert not connected  # Daphne answers this with HTTP 403 (see test_processes.py)


async def handshake(origin: str, host: str | None, scheme: str = "ws", headers: tuple = ()) -> bool:
    from presence.routing import websocket_application

    sent = [(b"origin", origin.encode()), *((b"host", host.encode()),) * bool(host), *headers]
    client = PatientCommunicator(websocket_application(), "/ws/presence/?session=originsess09", headers=sent)
    client.scope["scheme"] = scheme
    connected, _ = await client.connect()
    await client.disconnect()
    return connected


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "accepted"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", "ws", True),  # the page's own origin
        ("http://localhost:8000", "127.0.0.1:8000", "ws", True),  # another allowed host, same port
        ("https://127.0.0.1:8000", "127.0.0.1:8000", "ws", True),  # https is never weaker
        ("http://127.0.0.1:1", "127.0.0.1:8000", "ws", False),  # another port
        ("http://127.0.0.1", "127.0.0.1:8000", "ws", False),
        ("ftp://localhost", "localhost", "ws", False),  # another scheme
        ("ftp://localhost:8000", "localhost:8000", "ws", False),
        ("ws://localhost", "localhost", "ws", False),
        ("http://localhost", "localhost", "wss", False),  # an http page must not drive wss
        ("https://localhost", "localhost", "wss", True),
        ("https://localhost:443", "localhost", "wss", True),  # the default port, spelled out
        ("http://evil.example", "localhost", "ws", False),
        ("http://localhost.evil.example", "localhost", "ws", False),
        ("http://localhost:99999", "localhost", "ws", False),  # no such port: malformed
    ],
)
async def test_origins_compare_scheme_and_port_too(hub, origin, host, scheme, accepted):
    assert await handshake(origin, host, scheme) is accepted


async def test_an_ipv6_host_is_its_own_origin(hub):
    with override_settings(ALLOWED_HOSTS=["[::1]"]):
        assert await handshake("http://[::1]:8000", "[::1]:8000")
        assert not await handshake("http://[::1]:8001", "[::1]:8000")


async def test_an_https_page_behind_a_tls_proxy_is_its_own_origin(hub):
    with override_settings(ALLOWED_HOSTS=["blog.example"], SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        proto = ((b"x-forwarded-proto", b"https"),)
        assert await handshake("https://blog.example", "blog.example", headers=proto)
        assert not await handshake("http://blog.example", "blog.example", headers=proto)
        assert await handshake("http://blog.example", "blog.example")  # plain http, no proxy header
        assert not await handshake("https://blog.example:8443", "blog.example", headers=proto)


async def test_origins_allowed_by_setting(ws):
    with override_settings(PRESENCE_ALLOWED_ORIGINS=["https://blog.example", "http://127.0.0.1:1", "https://.cdn.example"]):
        client = await ws(session="originsess02", origin=b"https://blog.example")
        assert (await client.receive_json_from())["type"] == "hello"
        for listed in (b"http://127.0.0.1:1", b"https://static.cdn.example", b"https://cdn.example"):
            assert await ws(session="originsess04", origin=listed, expect_accept=False), listed
        for unlisted in (b"http://blog.example", b"https://blog.example:444", b"http://127.0.0.1:2", b"ftp://blog.example"):
            assert not await ws(session="originsess05", origin=unlisted, expect_accept=False), unlisted
    with override_settings(PRESENCE_ALLOW_NO_ORIGIN=True):
        client = await ws(session="originsess03", origin=None)
        assert (await client.receive_json_from())["type"] == "hello"


# -- domain events ----------------------------------------------------------------------------


async def test_join_and_leave_produce_one_event_each(ws, article, hub, clock, recorded_events):
    room = f"article:{article.pk}"
    tab1, tab2 = await ws(session="eventsession"), await ws(session="eventsession")
    for c in (tab1, tab2):
        await c.receive_json_from()
        await c.send_json_to({"type": "join", "room": room})
        await c.receive_json_from()
    start = int(clock() * 1000)
    for position in (0.2, 0.7, 0.4):
        clock.advance(10)
        await tab1.send_json_to({"type": "progress", "room": room, "position": position})
        await settle(tab1)
    await tab1.send_json_to({"type": "leave", "room": room})
    await tab2.disconnect()
    joined = [e for e in recorded_events if isinstance(e, events.ReaderJoined)]
    left = [e for e in recorded_events if isinstance(e, events.ReaderLeft)]
    assert len(joined) == 1 and len(left) == 1
    assert joined[0].identity == "anon:eventsession" and joined[0].joined_at == start
    assert left[0].reason == events.CLOSED
    assert (left[0].joined_at, left[0].left_at) == (start, start + 30_000)
    assert (left[0].furthest_position, left[0].last_position) == (0.7, 0.4)


@pytest.mark.parametrize("how", ["leave", "close", "timeout"])
async def test_end_reasons(ws, article, hub, clock, recorded_events, how):
    room = f"article:{article.pk}"
    client = await ws(session="reasonsessio")
    await client.receive_json_from()
    await client.send_json_to({"type": "join", "room": room})
    await client.receive_json_from()
    if how == "leave":
        await client.send_json_to({"type": "leave", "room": room})
        await client.send_json_to({"type": "ping"})
        await client.receive_json_from()
        await hub.settled()  # the session ends after the frame is handled
    elif how == "close":
        await client.disconnect()
    else:
        clock.advance(51)
        await hub.tick()
    (left,) = [e for e in recorded_events if isinstance(e, events.ReaderLeft)]
    assert left.reason == {"leave": events.LEFT, "close": events.CLOSED, "timeout": events.TIMEOUT}[how]


async def test_server_shutdown_ends_sessions_as_shutdown(ws, article, recorded_events):
    room = f"article:{article.pk}"
    client = await ws(session="shutdownsess")
    await client.receive_json_from()
    await client.send_json_to({"type": "join", "room": room})
    await client.receive_json_from()
    client.future.cancel()  # what Daphne does to every application when it stops
    with pytest.raises(BaseException):  # noqa: B017 - CancelledError
        await client.future
    (left,) = [e for e in recorded_events if isinstance(e, events.ReaderLeft)]
    assert left.reason == events.SHUTDOWN



async def test_frames_go_out_past_the_session_middlewares_send(hub, article, monkeypatch):
    """Channels' session middleware wraps ``send`` and inspects the session on every message; the
    consumer's frames (replies and the hub's fan-out) use the server's own ``send`` instead. The
    handshake's messages still pass through the middleware (a session cookie could ride on them)."""
    from channels.sessions import InstanceSessionWrapper

    from presence.routing import websocket_application

    seen: list[str] = []
    wrapped = InstanceSessionWrapper.send

    async def send(self, message):
        seen.append(message["type"])
        return await wrapped(self, message)

    monkeypatch.setattr(InstanceSessionWrapper, "send", send)
    room = f"article:{article.pk}"
    client = PatientCommunicator(websocket_application(), "/ws/presence/?session=rawsendread",
                                 headers=[(b"origin", b"http://localhost")])
    assert (await client.connect())[0]
    assert (await client.receive_json_from())["type"] == "hello"
    await client.send_json_to({"type": "join", "room": room})
    assert (await client.receive_json_from())["type"] == "room_state"
    await client.send_json_to({"type": "progress", "room": room, "position": 0.5})
    await hub.tick()
    assert (await client.receive_json_from())["type"] == "room"
    await client.disconnect()
    assert seen == ["websocket.accept"]
