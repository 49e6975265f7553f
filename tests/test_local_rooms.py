"""What a room's next frame and batch carry (presence/local_rooms.py), without a hub, a store or
a socket: the newest update of each reader, local or remote; a departure only of a reader who
is not back; the newest 100 of a crowded room."""

from __future__ import annotations

from django.test import override_settings

from presence.local_rooms import LocalRoom, Session
from presence.store import Reader


def seat(room: LocalRoom, rid: str, position: float | None = None, at: int = 0) -> Reader:
    """A reader of this process in the room (one tab)."""
    reader = Reader(rid, None, position, at, at)
    room.members[rid] = {object()}
    room.sessions[rid] = Session(f"anon:{rid}", reader, started_at=at)
    return reader


def remote(rid: str, position: float, at: int) -> dict:
    return Reader(rid, None, position, 0, at).as_dict()


def test_the_frame_holds_each_readers_newest_update_whichever_process_made_it():
    room = LocalRoom("article:1")
    mine = seat(room, "r-mine", 0.1, at=100)
    room.announce(mine)
    # The same reader in a tab of another process, later; and a reader only there.
    room.merge_remote([remote("r-mine", 0.6, 200), remote("r-there", 0.3, 150)], [])
    updates, left = room.take_frame()
    assert [(u["id"], u["position"]) for u in updates] == [("r-mine", 0.6), ("r-there", 0.3)]
    assert left == set()
    assert room.take_frame() == ([], set()), "a frame's changes are sent once"


def test_an_older_remote_update_does_not_overwrite_a_newer_one():
    room = LocalRoom("article:1")
    mine = seat(room, "r", 0.9, at=300)
    room.merge_remote([remote("r", 0.2, 100)], [])  # older than this tab's position
    room.merge_remote([remote("x", 0.5, 250)], [])
    room.merge_remote([remote("x", 0.4, 200)], [])  # a late batch, older than the one before
    room.announce(mine)
    updates, _ = room.take_frame()
    assert {u["id"]: u["position"] for u in updates} == {"r": 0.9, "x": 0.5}


def test_a_departure_elsewhere_of_a_reader_still_here_is_not_shown():
    room = LocalRoom("article:1")
    seat(room, "both")  # also in a tab of another process, which closed
    room.merge_remote([], ["both", "only-there"])
    assert room.take_frame() == ([], {"only-there"})


def test_a_reader_who_left_and_came_back_before_the_frame_is_an_update_not_a_departure():
    room = LocalRoom("article:1")
    room.merge_remote([], ["r"])
    room.merge_remote([remote("r", 0.5, 300)], [])
    updates, left = room.take_frame()
    assert [u["id"] for u in updates] == ["r"] and left == set()


def test_a_departure_here_goes_to_the_frame_and_the_batch_with_nothing_it_had_not_sent():
    room = LocalRoom("article:1")
    reader = seat(room, "r", 0.4, at=100)
    room.announce(reader)
    room.to_store.add("r")
    session = room.depart("r")
    room.gone("r")
    assert session.reader is reader and "r" not in room.members
    assert room.take_frame() == ([], {"r"})
    assert room.take_batch() == ([], {"r"})
    assert room.take_writes() == []


def test_writes_are_copies_taken_once():
    room = LocalRoom("article:1")
    reader = seat(room, "r", 0.4, at=100)
    room.to_store.add("r")
    ((name, written),) = room.take_writes()
    reader.position = 0.8  # the reader moves on while the write is on its way
    assert (name, written.position) == ("article:1", 0.4)
    assert room.take_writes() == []


def test_a_crowded_rooms_frame_and_batch_list_only_the_newest_readers():
    room = LocalRoom("article:1")
    with override_settings(PRESENCE_ROOM_STATE_READERS=3):
        for n in range(5):
            room.announce(seat(room, f"r{n}", n / 10, at=100 + 2 * n))
        room.merge_remote([remote("far", 0.9, 105)], [])
        frame, _ = room.take_frame()
        batch, _ = room.take_batch()
    assert [u["id"] for u in frame] == ["r4", "r3", "far"]
    assert [u["id"] for u in batch] == ["r4", "r3", "r2"], "a batch carries this process's readers only"
