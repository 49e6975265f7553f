"""CPU per `progress` frame on the consumer's receive path (docs/benchmarks.md, 2026-12-02).

    python -m bench.frame_cost                   # 20,000 frames, 7 repeats, the median
    python -m bench.frame_cost --frames 5000 --repeats 5 --json

Calls a real ``PresenceConsumer`` as the server would (its ASGI ``__call__``), with an in-memory
``receive`` and ``send``, in one process with the memory store and a hub driven by hand (no tick
or flush loop). Each repeat is one connection: it connects, joins an article, then gets
``--frames`` progress frames as the widget sends them (``presence.js``: type, room, position),
then disconnects. ``receive`` never waits, so nothing else runs between the frames: the time
between handing out the first progress frame and the disconnect (``time.process_time``) is the
path from ``websocket.receive`` through ``protocol.parse`` to ``hub.progress``; each repeat is run
a second time with ``hub.progress`` doing nothing, which leaves the consumer's and the protocol's
share. ``--queued`` runs each repeat a third time with the frames handed over through an
``asyncio.Queue`` by a task that returns to the event loop between them, as under a server.
The rate limit is raised so that every frame is accepted (the limiter still runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

# A throwaway SQLite file (the article the frames are about), never a Redis of the environment.
_db = tempfile.NamedTemporaryFile(prefix="frame-cost-", suffix=".sqlite3", delete=False)
_db.close()
os.environ["DATABASE_URL"] = f"sqlite:///{_db.name}"
for _name in ("REDIS_URL", "CHANNEL_REDIS_URLS", "REDIS_CLUSTER"):
    os.environ.pop(_name, None)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import AnonymousUser  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import override_settings  # noqa: E402

from presence.consumers import PresenceConsumer  # noqa: E402
from presence.hub import Hub, set_hub  # noqa: E402
from presence.store.memory import MemoryStore  # noqa: E402

ROOM = "article:1"  # the first of the demo articles the migrations seed


def frames(count: int) -> list[dict]:
    """``websocket.receive`` messages of progress frames, positions moving as a reader scrolls."""
    return [
        {"type": "websocket.receive", "text": json.dumps({"type": "progress", "room": ROOM, "position": n / count})}
        for n in range(count)
    ]


async def one_connection(messages: list[dict], queued: bool = False) -> tuple[float, int]:
    """CPU seconds for ``messages`` through one consumer, and how many frames it sent back.
    ``queued``: each message through an ``asyncio.Queue`` from a task of its own that returns
    to the event loop between messages, as a server hands them over (one wake-up per frame)."""
    script = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": json.dumps({"type": "join", "room": ROOM})},
        *messages,
        {"type": "websocket.disconnect", "code": 1000},
    ]
    first, last = 2, 2 + len(messages)
    marks: dict[str, float] = {}
    position = 0
    queue: asyncio.Queue | None = asyncio.Queue() if queued else None

    async def feed() -> None:
        for message in script:
            queue.put_nowait(message)
            await asyncio.sleep(0)

    async def receive() -> dict:
        nonlocal position
        if position == first:
            marks["start"] = time.process_time()
        elif position == last:
            marks["end"] = time.process_time()
        message = script[position] if queue is None else await queue.get()
        position += 1
        return message

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/ws/presence/",
        "query_string": b"session=framecost0001",
        "headers": [],
        "client": ("127.0.0.1", 40000),
        "user": AnonymousUser(),
    }
    feeding = asyncio.create_task(feed()) if queued else None
    await PresenceConsumer.as_asgi()(scope, receive, send)
    if feeding is not None:
        await feeding
    texts = [m for m in sent if m["type"] == "websocket.send"]
    assert position == len(script), "the consumer stopped before the last frame"
    return marks["end"] - marks["start"], len(texts)


async def measure(args) -> dict:
    hub = Hub(store=MemoryStore("frame-cost"), autotick=False)
    set_hub(hub)
    messages = frames(args.frames)
    await one_connection(messages[: min(1000, args.frames)])  # warm up: imports, the room's cache
    queued = []
    totals, without_hub, replies = [], [], None
    for _ in range(args.repeats):
        seconds, replies = await one_connection(messages)
        totals.append(seconds / args.frames * 1e6)
        # The same with the hub's part (membership, the room's outbox) left out: the consumer's and
        # the protocol's share of the path.
        hub.progress = lambda conn, room, position, name: None
        seconds, _ = await one_connection(messages)
        without_hub.append(seconds / args.frames * 1e6)
        del hub.progress
        if args.queued:
            seconds, _ = await one_connection(messages, queued=True)
            queued.append(seconds / args.frames * 1e6)
    await hub.stop()
    set_hub(None)
    return {
        "frames": args.frames,
        "repeats": args.repeats,
        "us_per_frame": totals,
        "median_us_per_frame": statistics.median(totals),
        "us_per_frame_without_hub": without_hub,
        "median_us_per_frame_without_hub": statistics.median(without_hub),
        "us_per_frame_queued": queued,
        "median_us_per_frame_queued": statistics.median(queued) if queued else None,
        "replies_per_connection": replies,  # hello and the join's room_state: no error frames
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--queued", action="store_true",
                        help="also through an asyncio.Queue, one event-loop wake-up per frame as under a server")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        call_command("migrate", verbosity=0)
        with override_settings(PRESENCE_RATE=1e9, PRESENCE_BURST=10**9):
            result = asyncio.run(measure(args))
    finally:
        os.unlink(_db.name)
    if args.json:
        print(json.dumps(result))
        return
    runs = ", ".join(f"{us:.1f}" for us in result["us_per_frame"])
    print(f"{result['frames']} progress frames x {result['repeats']}: {runs} µs CPU per frame")
    print(f"median {result['median_us_per_frame']:.2f} µs per frame")
    runs = ", ".join(f"{us:.1f}" for us in result["us_per_frame_without_hub"])
    print(f"without hub.progress: {runs}; median {result['median_us_per_frame_without_hub']:.2f} µs per frame")
    if queued := result["us_per_frame_queued"]:
        runs = ", ".join(f"{us:.1f}" for us in queued)
        print(f"through a queue: {runs}; median {result['median_us_per_frame_queued']:.2f} µs per frame")


if __name__ == "__main__":
    main()
