"""Who is here, and what the store and the other processes must hear of each change
(presence/membership.py), without a hub, a store, a layer or a socket. Every interleaving of
these effects with a real store: test_interleavings.py."""

from __future__ import annotations

import pytest

from presence import events, identity
from presence.errors import NotJoined
from presence.membership import (
    Changed,
    ClaimOnline,
    Depart,
    Membership,
    Opened,
    Publish,
    ReleaseOnline,
)
from presence.store import Reader
from tests.support.hubs import tab

ROOM = "article:1"


def kinds(effects: list) -> list[str]:
    return [type(effect).__name__ for effect in effects]


def test_a_reader_is_released_online_only_when_its_last_tab_closes():
    here = Membership("p1")
    first, second = tab("ada"), tab("ada")
    assert here.open(first) == [ClaimOnline(first.reader_id)]
    assert here.open(second) == [ClaimOnline(first.reader_id)]  # every tab claims: idempotent
    assert here.close(first, events.CLOSED, 10) == []
    assert here.close(second, events.CLOSED, 10) == [ReleaseOnline(first.reader_id)]
    assert here.close(second, events.CLOSED, 10) is None, "closed once"
    assert not here.holds(None, first.reader_id) and not here.connections


def test_the_first_reader_of_a_room_opens_it_and_starts_a_session():
    here = Membership("p1")
    ada, bob = tab("ada"), tab("bob")
    here.open(ada), here.open(bob)
    effects = here.join(ada, ROOM, 1_000)
    assert kinds(effects) == ["Opened", "Enter"] and effects[0] == Opened(here.rooms[ROOM])
    enter = effects[1]
    rid = identity.reader_id("anon:ada", ROOM)
    assert enter.key == ("room", ROOM, rid) and not enter.carried
    assert enter.joined == events.ReaderJoined(ROOM, "anon:ada", rid, 1_000, "p1")
    assert kinds(here.join(bob, ROOM, 2_000)) == ["Enter"], "the room is open already"
    assert here.join(ada, ROOM, 3_000) == [], "joined already"


def test_a_second_tab_claims_again_without_a_new_session():
    here = Membership("p1")
    one, two = tab("ada"), tab("ada")
    first = here.join(one, ROOM, 1_000)[-1]
    (again,) = here.join(two, ROOM, 5_000)
    assert again.joined is None and again.session is first.session
    assert here.leave(one, ROOM, events.LEFT, 6_000) == [], "the other tab still reads"
    assert here.holds(ROOM, first.session.reader.id)


def test_the_last_reader_leaving_ends_its_session_and_forgets_the_room_with_its_departures():
    here = Membership("p1")
    ada = tab("ada")
    (_, enter) = here.join(ada, ROOM, 1_000)
    local = enter.room
    local.to_store.add(enter.session.reader.id)  # moved since the last write
    effects = here.leave(ada, ROOM, events.LEFT, 9_000)
    depart, close = effects
    assert isinstance(depart, Depart) and depart.unwritten and depart.key == enter.key
    assert isinstance(close, Publish) and close.room == ROOM and ROOM not in here.rooms
    ended = depart.ended("p1")
    assert (ended.joined_at, ended.left_at, ended.reason) == (1_000, 9_000, events.LEFT)


def test_a_claim_answered_after_its_session_ended_announces_nothing():
    here = Membership("p1")
    ada = tab("ada")
    (_, enter) = here.join(ada, ROOM, 1_000)
    here.leave(ada, ROOM, events.LEFT, 2_000)
    stored = Reader(enter.session.reader.id, None, 0.4, 500, 500)
    assert here.claimed(enter, stored) is None


def test_a_claim_keeps_the_record_another_process_made():
    here = Membership("p1")
    ada = tab("ada")
    (_, enter) = here.join(ada, ROOM, 1_000)
    rid = enter.session.reader.id
    stored = Reader(rid, "Ada", 0.4, 500, 800)  # a tab elsewhere joined first and moved
    assert here.claimed(enter, stored) == stored
    assert here.rooms[ROOM].sessions[rid].reader == stored and here.rooms[ROOM].sessions[rid].furthest == 0.4


def test_a_re_identified_reader_carries_its_position_over_an_older_record():
    here = Membership("p1")
    conn = tab("visitor")
    here.open(conn)
    here.join(conn, ROOM, 1_000)
    conn_reader = here.positions(conn)[ROOM]
    conn_reader.position = 0.7
    carried = here.positions(conn)
    effects = here.leave_all(conn, events.IDENTIFY, 2_000) + here.release_online(conn)
    assert kinds(effects) == ["Depart", "Publish", "ReleaseOnline"]
    here.rekey(conn, "user:7")
    assert conn.reader_id == identity.reader_id("user:7")
    (_, enter) = here.join(conn, ROOM, 3_000, position=carried[ROOM].position)
    assert enter.carried and enter.joined.identity == "user:7"
    older = Reader(enter.session.reader.id, None, 0.2, 100, 100)  # this user's record from long ago
    reader = here.claimed(enter, older)
    assert reader.position == 0.7 and reader.joined_at == 100
    assert reader.id in here.rooms[ROOM].to_store, "the carried position is written"


def test_a_release_reaches_whoever_still_shows_the_reader():
    here = Membership("p1")
    ada, bob = tab("ada"), tab("bob")
    here.join(ada, ROOM, 1_000)
    here.join(bob, ROOM, 1_000)
    ada_id = identity.reader_id("anon:ada", ROOM)
    here.leave(ada, ROOM, events.LEFT, 2_000)
    assert here.released(ROOM, ada_id) == [Changed(here.rooms[ROOM])]
    assert ada_id in here.rooms[ROOM].left, "the next frame shows the departure"
    here.join(ada, ROOM, 3_000)  # back before the store answered
    assert here.released(ROOM, ada_id) == []
    here.leave(ada, ROOM, events.LEFT, 4_000), here.leave(bob, ROOM, events.LEFT, 4_000)
    assert here.released(ROOM, ada_id) == [Publish(ROOM, {ada_id})], "forgotten here: the others hear now"


def test_a_shutdown_ends_every_session_at_once_with_the_unwritten_positions():
    here = Membership("p1")
    ada, bob = tab("ada"), tab("bob")
    for conn in (ada, bob):
        here.open(conn)
        here.join(conn, ROOM, 1_000)
    moved = here.positions(ada)[ROOM]
    moved.position = 0.5
    here.rooms[ROOM].to_store.add(moved.id)
    ended, writes = here.close_all(9_000, events.SHUTDOWN)
    assert sorted(e.identity for e in ended) == ["anon:ada", "anon:bob"]
    assert {(e.left_at, e.reason) for e in ended} == {(9_000, events.SHUTDOWN)}
    assert writes == [(ROOM, moved)] and writes[0][1] is not moved, "a copy"
    assert ada.gone and bob.gone and not here.rooms and not here.connections
    assert here.join(ada, ROOM, 9_500) == [], "a closed connection enters nothing"


def test_a_move_keeps_the_furthest_position_and_waits_for_the_next_store_write():
    here = Membership("p1")
    ada = tab("ada")
    here.join(ada, ROOM, 1_000)
    for at, position in ((2_000, 0.6), (3_000, 0.4)):
        local, reader = here.progress(ada, ROOM, position, "Ada", at)
    assert (reader.position, reader.name, reader.updated_at) == (0.4, "Ada", 3_000)
    assert reader.id in local.to_store
    (opened,) = here.open_sessions()
    assert (opened.furthest_position, opened.last_position) == (0.6, 0.4)
    assert here.claims() == [(ROOM, reader)]
    with pytest.raises(NotJoined):
        here.progress(ada, "article:2", 0.5, None, 4_000)
