"""When a reading of the site-wide count is worth an `online` frame, and to whom
(presence/online_count.py), without a hub, a store or a socket."""

from __future__ import annotations

from presence.online_count import OnlineCount
from tests.support.hubs import tab


def greeted(count: OnlineCount, value: int, n: int = 1) -> list:
    tabs = [tab(f"reader-{i}") for i in range(n)]
    for conn in tabs:
        count.greeted(conn, value)
    return tabs


def test_a_change_is_sent_once_it_held_for_two_readings_and_only_to_who_was_told_otherwise():
    count = OnlineCount()
    one, two = greeted(count, 5, 2)
    assert count.recipients(5, {one, two}, 0.0) == ([], True), "their hellos carried it"
    assert not count.settled(6, 10.0, 1.0), "read once: an arrival that may go again"
    assert count.settled(6, 10.25, 1.0)
    stale, changed = count.recipients(6, {one, two}, 10.25)
    assert set(stale) == {one, two} and changed
    assert count.recipients(6, {one, two}, 10.5) == ([], False), "told already"


def test_a_departure_and_an_arrival_a_moment_apart_send_nothing():
    count = OnlineCount()
    (one,) = greeted(count, 5)
    count.recipients(5, {one}, 0.0)
    assert not count.settled(4, 10.0, 1.0)
    assert count.settled(5, 10.25, 1.0), "unchanged: nothing new to send"
    assert count.recipients(5, {one}, 10.25) == ([], False)


def test_a_change_waits_for_the_interval_after_the_last_one():
    count = OnlineCount()
    (one,) = greeted(count, 5)
    count.recipients(5, {one}, 0.0)
    count.settled(6, 10.0, 1.0)
    count.settled(6, 10.25, 1.0)
    count.recipients(6, {one}, 10.25)
    count.settled(7, 10.5, 1.0)
    assert not count.settled(7, 10.75, 1.0), "held, but within the interval of the last change"
    assert count.settled(7, 11.25, 1.0)


def test_a_connection_is_not_sent_a_count_before_its_hello_nor_after_it_closed():
    count = OnlineCount()
    (told,) = greeted(count, 5)
    unannounced, closed = tab("new"), tab("gone")
    count.greeted(closed, 5)
    closed.gone = True
    stale, _ = count.recipients(6, {told, unannounced, closed}, 1.0)
    assert stale == [told]


def test_a_connection_greeted_with_an_older_count_is_brought_up_to_date_though_nothing_changed():
    count = OnlineCount()
    (old,) = greeted(count, 5)
    count.recipients(6, {old}, 1.0)
    (late,) = greeted(count, 5)  # its hello's reading was taken before the change
    assert count.recipients(6, {old, late}, 2.0) == ([late], False)
