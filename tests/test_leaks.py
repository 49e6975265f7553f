"""Impersonation and leaks: no string makes a connection a user it is not, and no
frame or public API response carries an identity, a session id, a username, an email or an IP.

Already proven elsewhere, referenced rather than repeated:

- forged, tampered, expired, other-salt and other-site tokens -> ``invalid_token``:
  ``tests/test_consumer.py::test_forged_expired_and_other_site_tokens_are_refused``,
  ``::test_identify_with_garbage_token``; malformed sessions: ``::test_identify_with_malformed_session_is_bad_message``;
- a signed-in user is the user whatever ``session`` says: ``::test_signed_in_user_is_the_user_whatever_session_says``;
- foreign or missing Origin refused: ``tests/test_consumer.py::test_foreign_or_missing_origin_is_refused`` and, with
  HTTP 403 from a real Daphne, ``tests/test_processes.py::test_handshake_without_an_allowed_origin_is_refused``;
- staff-only API: ``tests/test_api.py::test_staff_endpoints_refuse_anonymous_and_non_staff``; admin pages:
  ``tests/test_admin.py::test_anonymous_is_sent_to_the_login``, ``::test_non_staff_is_sent_to_the_login``,
  ``::test_staff_without_the_view_permission_is_refused``;
- public API bodies with seeded store data: ``tests/test_api.py::test_public_responses_carry_no_identities_...``.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from asgiref.sync import sync_to_async
from django.core import signing
from django.core.cache import cache
from django.test import Client

import presence.store
from presence import identity
from presence.routing import websocket_application
from tests.conftest import PatientCommunicator

pytestmark = [pytest.mark.django_db(transaction=True)]


async def open_as(session: str | None = None, cookie: str | None = None, address: str = "203.0.113.7",
                  raw_query: str | None = None):
    query = raw_query if raw_query is not None else (f"session={quote(session)}" if session else "")
    headers = [(b"origin", b"http://localhost")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    client = PatientCommunicator(websocket_application(), "/ws/presence/?" + query, headers=headers)
    client.scope["client"] = (address, 51000)
    connected, _ = await client.connect()
    assert connected
    return client


# -- impersonation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["session=user:{pk}", "session=user%3A{pk}", "session=user%253A{pk}", "user={pk}", "session=anon:user:{pk}",
     "session={pk}", "session=user:{pk}&session=user:{pk}", "session[]=user:{pk}", "session=user:{pk}%00",
     "session=user:{pk}\n"],
)
async def test_no_query_string_makes_a_connection_a_user(hub, make_user, query):
    victim = await make_user("victim")
    client = await open_as(raw_query=query.format(pk=victim.pk))
    hello = await client.receive_json_from()
    assert hello["reader"] != identity.reader_id(identity.for_user(victim.pk))
    (conn,) = hub.connections
    assert not conn.identity.startswith("user:")
    await client.disconnect()


async def test_no_identify_frame_makes_a_connection_a_user(hub, make_user, user_token):
    victim = await make_user("victim2")
    as_victim = identity.reader_id(identity.for_user(victim.pk))
    client = await open_as(session="impostor0001")
    await client.receive_json_from()
    token = await user_token(victim)
    attempts = [
        {"type": "identify", "session": f"user:{victim.pk}"},
        {"type": "identify", "session": f"user_{victim.pk}xxxxxx"},  # a valid session, so anonymous
        {"type": "identify", "session": f"anon:user:{victim.pk}"},
        {"type": "identify", "token": f"user:{victim.pk}"},
        {"type": "identify", "token": str(victim.pk)},
        {"type": "identify", "token": signing.dumps({"u": victim.pk}, salt="presence.identity")},  # int pk: bad payload
        {"type": "identify", "token": signing.dumps({"user": str(victim.pk)}, salt="presence.identity")},
        {"type": "identify", "token": signing.dumps(f"user:{victim.pk}", salt="presence.identity")},
        {"type": "identify", "token": signing.dumps({"u": str(victim.pk)})},  # unsalted
        {"type": "identify", "token": token.split(":", 1)[0] + ":" + "A" * 27},
        {"type": "identify", "token": token + "x"},
        {"type": "identify", "token": " " + token},
        {"type": "identify", "user": victim.pk},
        {"type": "identify", "session": "impostor0002", "user": victim.pk},
        {"type": "identify", "session": "impostor0002", "token": token},  # both: refused whole
    ]
    for frame in attempts:
        await client.send_json_to(frame)
        reply = await client.receive_json_from()
        assert reply.get("reader") != as_victim, frame
        assert reply["type"] == "error" or frame.get("session", "").startswith("user_") or "user" in frame, (
            frame, reply)
        (conn,) = hub.connections
        assert not conn.identity.startswith("user:"), frame
    await client.disconnect()


# -- leaks --------------------------------------------------------------------------------------


async def test_a_scripted_session_leaks_no_identity_anywhere(hub, articles, make_user, user_cookie, clock, user_token):
    one, two = (f"article:{a.pk}" for a in articles[:2])
    alice, bob = await make_user("alice_leak"), await make_user("bob_leak")
    cookies = {"alice": await user_cookie("alice_leak"), "bob": await user_cookie("bob_leak")}
    sessions = {"alice": "aliceSession01", "bob": "bobSession0002", "anon": "anonReaderSess", "tab": "aliceOtherTab1"}
    addresses = {"alice": "198.51.100.23", "bob": "203.0.113.99", "anon": "192.0.2.77", "tab": "127.0.0.1"}
    clients = {
        "alice": await open_as(sessions["alice"], cookies["alice"], addresses["alice"]),
        "bob": await open_as(sessions["bob"], cookies["bob"], addresses["bob"]),
        "anon": await open_as(sessions["anon"], None, addresses["anon"]),
        "tab": await open_as(sessions["tab"], None, addresses["tab"]),  # alice's anonymous tab, identifies later
    }
    seen: list[str] = []  # every WebSocket frame any of them received
    bodies: list[str] = []  # every public API response body

    async def read_all():
        for client in clients.values():
            while not await client.receive_nothing(timeout=0.02):
                seen.append((await client.receive_output())["text"])

    async def send(who, **frame):
        await clients[who].send_json_to(frame)

    for who in clients:
        await send(who, type="join", room=one)
    await send("bob", type="join", room=two)
    await send("anon", type="join", room=two)
    clock.advance(1)
    await send("alice", type="progress", room=one, position=0.3, name="Reader A")
    await send("bob", type="progress", room=one, position=0.6, name="  Reader\u200b B ")
    await send("anon", type="progress", room=two, position=1.0, name="Someone")
    await send("tab", type="progress", room=one, position=0.1)
    for who in clients:
        await send(who, type="ping")
    await read_all()
    await hub.tick()
    await read_all()
    clock.advance(1)
    alice_token = await user_token(alice)
    await send("tab", type="identify", token=alice_token)
    await send("anon", type="identify", session="anonRenamed001")
    await send("bob", type="leave", room=two)
    await send("bob", type="leave", room=two, ref="again")  # not_joined, with its ref
    await send("anon", type="join", room="article:999999")  # invalid_room
    for who in clients:
        await send(who, type="ping")
    await read_all()
    await hub.tick()
    clock.advance(1)
    await hub.tick()
    await read_all()

    # Every public REST endpoint, on the same store, while they read.
    presence.store.set_store(hub.store)
    try:
        await sync_to_async(cache.clear)()
        http = Client(REMOTE_ADDR="198.51.100.23")
        for url in ("online/", "rooms/", f"rooms/{one}/", f"rooms/{two}/", "rooms/article:999999/"):
            response = await sync_to_async(http.get)(f"/api/presence/{url}")
            assert response.status_code in (200, 404), url
            bodies.append(response.content.decode())
    finally:
        presence.store.reset()
    await clients["alice"].disconnect()
    await hub.tick()
    for who in ("bob", "anon", "tab"):
        await clients[who].send_json_to({"type": "ping"})
    await read_all()
    for who in ("bob", "anon", "tab"):  # their sessions written now, not while the test database is flushed
        await clients[who].disconnect()

    frames = [json.loads(text) for text in seen]
    assert {f["type"] for f in frames} >= {"hello", "room_state", "room", "pong", "error", "online"}
    assert any(r.get("name") == "Reader A" for f in frames for r in f.get("updates", []))  # names do go out
    secrets = [
        identity.for_user(alice.pk), identity.for_user(bob.pk), *(identity.for_session(s) for s in sessions.values()),
        identity.for_session("anonRenamed001"), *sessions.values(), "anonRenamed001",
        alice.username, bob.username, alice.email, bob.email, "example.com",
        *addresses.values(), "127.0.0.1", "user:", "anon:", "conn:",
        *(c.split("=", 1)[1] for c in cookies.values()), alice_token.split(":")[0],
    ]
    assert len(bodies) == 5
    for text in seen + bodies:
        for secret in secrets:
            assert secret not in text, (secret, text)


# -- tracking across articles ---------------------------------------------------------------------


async def test_nothing_an_observer_sees_links_a_reader_across_articles(hub, articles, make_user, user_token, clock):
    """An observer in two articles sees the same reader, first anonymous then signed in, in both:
    no reader id it is ever shown (frames, the REST API) is shared by the two rooms, and the
    reader's site-wide id (its `hello`) is shown in neither (protocol 1.1)."""
    one, two = (f"article:{a.pk}" for a in articles[:2])
    reader = await make_user("tracked_reader")
    observer = await open_as("observer0042", address="192.0.2.1")
    tab_one = await open_as("trackedSess01", address="192.0.2.2")
    tab_two = await open_as("trackedSess01", address="192.0.2.2")  # the same browser, another article
    shown: dict[str, set[str]] = {one: set(), two: set()}
    mine: dict[str, str] = {}
    texts: list[str] = []

    def collect(frame: dict) -> None:
        room = frame.get("room")
        if frame["type"] == "room_state":
            mine.setdefault(room, frame.get("you", observer_site_id))
            shown[room].update(r["id"] for r in frame["readers"])
        elif frame["type"] == "room":
            shown[room].update(u["id"] for u in frame["updates"])
            shown[room].update(frame["left"])

    async def read_observer() -> None:
        while not await observer.receive_nothing(timeout=0.02):
            text = (await observer.receive_output())["text"]
            texts.append(text)
            collect(json.loads(text))

    observer_site_id = (await observer.receive_json_from())["reader"]
    subject_site_id = (await tab_one.receive_json_from())["reader"]
    await tab_two.receive_json_from()
    for client, room in ((observer, one), (observer, two), (tab_one, one), (tab_two, two)):
        await client.send_json_to({"type": "join", "room": room})
    clock.advance(1)
    await tab_one.send_json_to({"type": "progress", "room": one, "position": 0.25})
    await tab_two.send_json_to({"type": "progress", "room": two, "position": 0.75})
    for client in (tab_one, tab_two):
        await client.send_json_to({"type": "ping"})
        while (await client.receive_json_from())["type"] != "pong":
            pass
    await hub.tick()
    await read_observer()
    # Signing in (another tab's token reaches both): anonymous ids leave, the user's arrive.
    token = await user_token(reader)
    for client in (tab_one, tab_two):
        await client.send_json_to({"type": "identify", "token": token})
        while (await client.receive_json_from(timeout=5))["type"] != "hello":
            pass
    clock.advance(1)
    await hub.tick()
    await read_observer()
    presence.store.set_store(hub.store)
    try:
        for room in (one, two):
            response = await sync_to_async(Client(REMOTE_ADDR="192.0.2.3").get)(f"/api/presence/rooms/{room}/")
            texts.append(response.content.decode())
            shown[room].update(r["id"] for r in response.json()["readers"])
    finally:
        presence.store.reset()

    others = {room: ids - {mine[room]} for room, ids in shown.items()}
    assert len(others[one]) == len(others[two]) == 2  # the subject, anonymous then signed in, in each
    assert others[one].isdisjoint(others[two]), others
    for text in texts:
        assert subject_site_id not in text
        assert identity.reader_id(identity.for_user(reader.pk)) not in text
    for client in (observer, tab_one, tab_two):
        await client.disconnect()
