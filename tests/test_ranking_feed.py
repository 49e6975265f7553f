"""The live ranking's subscribers (presence/ranking_feed.py): one ranking read per tick goes out
only to the subscribers whose top rooms changed, each cut to its own limit."""

from __future__ import annotations

from presence.ranking_feed import RankingFeed
from tests.support.hubs import tab


def ranking(*counts: int) -> list[dict]:
    return [{"room": f"article:{i}", "count": n, "title": f"A{i}", "url": f"/a/{i}/"} for i, n in enumerate(counts)]


def test_only_subscribers_whose_top_rooms_changed_are_sent_the_ranking():
    feed = RankingFeed()
    top1, top3 = tab("top1"), tab("top3")
    before = ranking(5, 3, 2, 1)
    feed.subscribe(top1, 1, before[:1])
    feed.subscribe(top3, 3, before[:3])
    assert feed.widest() == 3

    third_moved = ranking(5, 3, 4, 1)  # only the third room's count changed
    assert feed.changed(third_moved) == {3: [top3]}
    assert feed.changed(third_moved) == {}  # recorded as sent
    assert feed.changed(ranking(6, 3, 4, 1)) == {1: [top1], 3: [top3]}


def test_a_second_subscription_replaces_the_first_and_closed_connections_get_nothing():
    feed = RankingFeed()
    reader, gone = tab("reader"), tab("gone")
    feed.subscribe(reader, 5, ranking(2, 1))
    feed.subscribe(reader, 1, ranking(2))
    feed.subscribe(gone, 1, [])
    gone.gone = True
    assert len(feed) == 2 and feed.widest() == 1
    assert feed.changed(ranking(2, 1)) == {}  # the reader's top one is unchanged; gone is skipped
    feed.drop(gone)
    feed.drop(gone)  # twice is fine
    assert len(feed) == 1
    late = tab("late")  # closed while its first ranking was being read
    late.gone = True
    feed.subscribe(late, 3, ranking(2, 1))
    assert len(feed) == 1
    feed.clear()
    assert len(feed) == 0
