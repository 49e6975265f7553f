"""Every interleaving of tabs opening, joining, leaving, re-identifying and closing, whatever order
the store answers in: once all is done, the store counts exactly the readers of the open tabs, and
every reading session that began has ended exactly once, or is still open with its tab.

Hypothesis plays the part of the event loop. At each step it picks what happens next: a tab's next
frame (a tab's own frames are handled one after another, as its consumer does), a tab dropped for
silence (at any moment, even while its own frame is being handled: the tick does it), or one of the
store calls waiting to complete. The store is the real in-memory store behind a gate; the hub is
the real hub (no tick loop, the test's clock)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from presence import events, history, identity, rooms
from presence.errors import NotJoined
from presence.hub import Hub
from presence.store.memory import MemoryStore
from tests.conftest import FakeClock
from tests.support.hubs import Client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WHO = ["anon:interleave-one", "anon:interleave-two"]
TABS = 3
GATED = {"join", "leave", "claim_online", "release_online", "update", "online", "room_state", "counts"}


class GatedStore:
    """The real store; each call of ``GATED`` waits until the test lets it through."""

    def __init__(self, store: MemoryStore):
        self.inner = store
        self.waiting: list[tuple[str, asyncio.Future]] = []

    def __getattr__(self, name):
        attribute = getattr(self.inner, name)
        if name not in GATED:
            return attribute

        async def gated(*args, **kwargs):
            gate = asyncio.get_running_loop().create_future()
            self.waiting.append((name, gate))
            await gate
            return await attribute(*args, **kwargs)

        return gated


@dataclass
class Tab:
    """One tab's script and what its reader should hold once every frame of it is handled."""

    who: str
    script: list[tuple]
    conn: object = None
    task: asyncio.Task | None = None
    rooms: set[str] = field(default_factory=set)
    closed: bool = False


def scripts(room_names: list[str]):
    op = st.one_of(
        st.tuples(st.just("join"), st.sampled_from(room_names)),
        st.tuples(st.just("leave"), st.sampled_from(room_names)),
        st.tuples(st.just("identify"), st.sampled_from(WHO)),
        st.tuples(st.just("close")),
    )
    return st.lists(st.tuples(st.sampled_from(WHO), st.lists(op, max_size=5)), min_size=2, max_size=TABS)


async def play(hub: Hub, tab: Tab, op: tuple) -> None:
    """One frame of a tab, handled as the consumer handles it."""
    kind = op[0]
    if kind == "open":
        client = Client()
        tab.conn, _ = await hub.register(tab.who, client.send, client.close)
    elif kind == "join":
        await hub.join(tab.conn, op[1])
        tab.rooms.add(op[1])
    elif kind == "leave":
        try:
            await hub.leave(tab.conn, op[1])
        except NotJoined:
            pass
        tab.rooms.discard(op[1])
    elif kind == "identify":
        await hub.identify(tab.conn, op[1])
        tab.who = op[1]
    else:  # close, or dropped for silence
        tab.closed = True
        await hub.unregister(tab.conn, events.TIMEOUT if kind == "drop" else events.CLOSED)


async def settle() -> None:
    """Let every task run until it waits at the store's gate or is done (no time passes)."""
    for _ in range(30):
        await asyncio.sleep(0)


async def run(hub: Hub, store: GatedStore, tabs: list[Tab], draw) -> None:
    """Hypothesis picks each next step until every script is played and every store call done."""
    dropping: list[asyncio.Task] = []
    while True:
        await settle()
        steps = [("store", n) for n in range(len(store.waiting))]
        for n, tab in enumerate(tabs):
            idle = tab.task is None or tab.task.done()
            if idle and tab.script:
                steps.append(("frame", n))
            if tab.conn is not None and not tab.closed:
                steps.append(("drop", n))
        if not steps:
            break
        kind, n = draw(st.sampled_from(steps))
        if kind == "store":
            store.waiting.pop(n)[1].set_result(None)
        elif kind == "frame":
            tab = tabs[n]
            tab.task = asyncio.create_task(play(hub, tab, tab.script.pop(0)))
        else:
            tabs[n].script.clear()
            dropping.append(asyncio.create_task(play(hub, tabs[n], ("drop",))))
    for task in [*(t.task for t in tabs if t.task is not None), *dropping]:
        assert task.done(), task
        task.result()  # a frame that failed fails the test


async def check(hub: Hub, store: MemoryStore, tabs: list[Tab], room_names: list[str], sessions: dict) -> None:
    """The store and the sessions agree with the open tabs."""
    open_tabs = [tab for tab in tabs if tab.conn is not None and not tab.closed]
    assert await store.online() == len({identity.reader_id(tab.who) for tab in open_tabs})
    for room in room_names:
        expected = {identity.reader_id(tab.who, room) for tab in open_tabs if room in tab.rooms}
        state = await store.room_state(room)
        assert {r.id for r in state.readers} == expected, room
        assert state.count == len(expected), room
        assert {rid for (r, rid), n in sessions.items() if r == room and n == 1} == expected, room
    assert all(n in (0, 1) for n in sessions.values()), sessions  # joined, then left, in that order


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_store_agrees_with_the_open_tabs_whatever_the_interleaving(data, article_rooms):
    async def scenario():
        inner = MemoryStore("interleavings")
        store = GatedStore(inner)
        hub = Hub(store=store, autotick=False, clock=FakeClock())
        for room in article_rooms:
            await rooms.resolve(room)  # cached: no database while the gates decide the order
        sessions: dict[tuple[str, str], int] = {}  # (room, reader id) -> sessions open

        async def joined(sender, event, **kwargs):
            key = (event.room, event.reader_id)
            sessions[key] = sessions.get(key, 0) + 1

        async def left(sender, event, **kwargs):
            key = (event.room, event.reader_id)
            sessions[key] = sessions.get(key, 0) - 1
            assert sessions[key] >= 0, f"{key} left before it joined"

        events.reader_joined.connect(joined, weak=False)
        events.reader_left.connect(left, weak=False)
        try:
            tabs = [Tab(who, [("open",), *ops]) for who, ops in data.draw(scripts(article_rooms))]
            await run(hub, store, tabs, data.draw)
            await check(hub, inner, tabs, article_rooms, sessions)
            for tab in tabs:  # then every tab closes
                if tab.conn is not None and not tab.closed:
                    tab.script = [("close",)]
            await run(hub, store, tabs, data.draw)
            await check(hub, inner, tabs, article_rooms, sessions)
            assert not hub.rooms and not hub.by_reader
        finally:
            events.reader_joined.disconnect(joined)
            events.reader_left.disconnect(left)
            await hub.stop()

    asyncio.run(scenario())  # in this thread: Hypothesis draws only here


@pytest.fixture
def article_rooms(transactional_db):
    """Two article rooms; the history recorder off (its database writes would leave the loop)."""
    from blog.models import Article

    made = [Article.objects.create(title=f"Interleaved {n}", slug=f"interleaved-{n}", body="Words.") for n in range(2)]
    events.reader_left.disconnect(dispatch_uid="presence.history.left")
    yield [f"article:{article.pk}" for article in made]
    history.connect()
