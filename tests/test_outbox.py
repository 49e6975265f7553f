"""Which rooms have a frame or a batch to send, and which may send it now (presence/outbox.py),
without a hub, a store or a socket: a fake clock, a process never loaded."""

from __future__ import annotations

import pytest

from presence.local_rooms import LocalRoom, Session
from presence.outbox import Outbox
from presence.pacing import Pacing
from presence.store import Reader


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def room_with_a_reader(name: str) -> tuple[LocalRoom, Reader]:
    local = LocalRoom(name)
    reader = Reader("r1", None, 0.1, 0, 0)
    local.members["r1"] = {object()}
    local.sessions["r1"] = Session("anon:r1", reader, started_at=0)
    return local, reader


def setup() -> tuple[Clock, Outbox, dict[str, LocalRoom], Reader]:
    clock = Clock()
    outbox = Outbox(Pacing(1.0, 0.1, clock, meter=lambda: 0.0, aligned=False))
    local, reader = room_with_a_reader("article:1")
    return clock, outbox, {local.name: local}, reader


def test_a_move_in_a_quiet_room_is_due_at_once_and_the_next_waits_for_the_window():
    clock, outbox, rooms, reader = setup()
    local = rooms["article:1"]
    local.announce(reader)
    assert outbox.changed(local, clock.now, published=True) <= clock.now, "a quiet room: at once"
    frames, batches = outbox.take(rooms, clock.now, force=False)
    assert [(f[0].name, [u["id"] for u in f[2]]) for f in frames] == [("article:1", ["r1"])]
    assert [(b[0], [u["id"] for u in b[1]]) for b in batches] == [("article:1", ["r1"])]
    assert outbox.rooms == set(), "nothing left to send"

    clock.now += 0.01
    reader.position = 0.2
    local.announce(reader)
    due = outbox.changed(local, clock.now, published=True)
    assert due == pytest.approx(1000.1), "the next frame waits for the coalescing window after the first"
    assert outbox.changed(local, clock.now, published=True) is None, "pending already: nothing new to wake for"
    assert outbox.take(rooms, clock.now, force=False) == ([], [])
    assert outbox.next_due(rooms) == due
    clock.now = due
    frames, _ = outbox.take(rooms, clock.now, force=False)
    assert [u["position"] for u in frames[0][2]] == [0.2]


def test_a_forced_flush_takes_what_is_not_due_yet():
    clock, outbox, rooms, reader = setup()
    local = rooms["article:1"]
    local.announce(reader)
    outbox.changed(local, clock.now, published=True)
    outbox.take(rooms, clock.now, force=False)
    local.announce(reader)
    outbox.changed(local, clock.now, published=True)
    assert outbox.take(rooms, clock.now, force=False) == ([], [])
    frames, batches = outbox.take(rooms, clock.now, force=True)
    assert len(frames) == len(batches) == 1


def test_a_room_forgotten_while_pending_sends_nothing():
    clock, outbox, rooms, reader = setup()
    local = rooms["article:1"]
    local.announce(reader)
    outbox.changed(local, clock.now)
    del rooms["article:1"]  # its last reader left
    assert outbox.next_due(rooms) == float("inf")
    assert outbox.take(rooms, clock.now, force=True) == ([], []) and outbox.rooms == set()


def test_departures_of_a_room_no_longer_held_here_ride_with_the_next_batch():
    clock, outbox, rooms, reader = setup()
    local = rooms["article:1"]
    assert outbox.depart("article:9", {"gone1"}, clock.now) == pytest.approx(1000.1), "due after the window"
    assert outbox.depart("article:9", {"gone2"}, clock.now) is None, "pending already"
    assert outbox.next_due(rooms) == pytest.approx(1000.1)
    local.announce(reader)
    outbox.changed(local, clock.now, published=True)
    _, batches = outbox.take(rooms, clock.now, force=False)
    assert sorted((room, sorted(left)) for room, _, left in batches) == [
        ("article:1", []), ("article:9", ["gone1", "gone2"])], "one flush carries both, before their window"
    assert outbox.departed == {} and outbox.next_due(rooms) == float("inf")

    assert outbox.depart("article:9", set(), clock.now) is None, "nothing to tell"
    outbox.depart("article:9", {"gone3"}, clock.now)
    assert outbox.take(rooms, clock.now, force=False) == ([], []), "alone, it waits for the window"
    clock.now += 0.1
    assert outbox.take(rooms, clock.now, force=False) == ([], [("article:9", [], {"gone3"})])


def test_a_room_held_again_sends_its_unpublished_departures_less_a_reader_back():
    clock, outbox, rooms, reader = setup()
    outbox.depart("article:1", {"r1", "r2"}, clock.now)
    local = rooms["article:1"]  # held here again
    outbox.reopen(local, clock.now)
    local.announce(reader)  # r1 is back
    assert outbox.next_due(rooms) <= clock.now, "a quiet room: at once"
    _, batches = outbox.take(rooms, clock.now, force=False)
    assert [(room, [u["id"] for u in updates], left) for room, updates, left in batches] == [
        ("article:1", ["r1"], {"r2"})], "r1's departure is not sent after its return"
    assert outbox.departed_since is None and outbox.next_due(rooms) == float("inf")
