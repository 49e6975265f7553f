"""The site under uvicorn: ASGI lifespan events stop the hub gracefully (``presence/lifespan.py``).

Daphne sends no lifespan events (the hub hooks Twisted's shutdown there: ``test_processes.py``);
uvicorn does, and nothing else would release a stopping uvicorn process's readers and claims.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import time

import pytest

from presence.lifespan import lifespan_application
from tests.conftest import CI
from tests.support.servers import Client, DaphneServer, UvicornServer, migrate_database, server_env

GRACEFUL_DEADLINE = 5.0  # as in test_processes: a graceful stop releases at once, well before reaping


def _require_uvicorn() -> None:
    if importlib.util.find_spec("uvicorn") is None:
        message = "uvicorn is not installed (requirements-dev.txt; or `pip install uvicorn wsproto`)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)


# -- the lifespan application alone ------------------------------------------------------


class StubHub:
    def __init__(self, fails: bool = False):
        self.fails = fails
        self.shut_down = 0

    async def shutdown(self) -> None:
        self.shut_down += 1
        if self.fails:
            raise RuntimeError("store unreachable")


async def _run_lifespan(*messages: str) -> list[dict]:
    incoming = asyncio.Queue()
    for kind in messages:
        incoming.put_nowait({"type": kind})
    sent = []

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(lifespan_application({"type": "lifespan"}, incoming.get, send), 5)
    return sent


@pytest.mark.parametrize("fails", [False, True], ids=["ok", "hub-fails"])
async def test_lifespan_shutdown_stops_the_running_hub(fails):
    from presence.hub import set_hub

    hub = StubHub(fails)
    set_hub(hub)
    try:
        sent = await _run_lifespan("lifespan.startup", "lifespan.shutdown")
    finally:
        set_hub(None)
    assert hub.shut_down == 1
    assert sent[0] == {"type": "lifespan.startup.complete"}
    assert sent[1]["type"] == ("lifespan.shutdown.failed" if fails else "lifespan.shutdown.complete")
    assert len(sent) == 2


async def test_lifespan_shutdown_without_a_hub_creates_none():
    from presence import hub as hubs

    loop = asyncio.get_running_loop()
    hubs.set_hub(None)
    assert await _run_lifespan("lifespan.startup", "lifespan.shutdown") == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
    assert loop not in hubs._hubs


@pytest.fixture(scope="module")
def site_db(redis_url, tmp_path_factory):
    url, pks = migrate_database(tmp_path_factory.mktemp("presence-uvicorn"), redis_url)
    assert pks, "the blog's data migration should seed articles"
    return url, pks


@pytest.mark.processes
@pytest.mark.redis
@pytest.mark.slow
async def test_terminated_uvicorn_process_releases_its_readers_at_once(site_db, redis_url, redis_prefix):
    """SIGTERM to uvicorn: it closes its WebSockets, then sends ``lifespan.shutdown``; an observer
    on a Daphne process sees the readers leave the site and the room well before reaping."""
    _require_uvicorn()
    url, pks = site_db
    room = f"article:{pks[0]}"
    env = server_env(redis_url, url, redis_prefix)
    opened: list[Client] = []
    with DaphneServer(env, name="observer") as daphne, UvicornServer(env, name="uvicorn") as uvicorn:
        try:
            observer = await Client.connect(daphne.url, "observer-reader")
            reader = await Client.connect(uvicorn.url, "uvicorn-reader")
            idle = await Client.connect(uvicorn.url, "uvicorn-no-room")
            opened += [observer, reader, idle]
            for client in (observer, reader):
                assert (await client.join(room))["type"] == "room_state"
            await observer.wait_until(lambda c: c.online == 3 and c.counts.get(room) == 2, timeout=10)
            mark = len(observer.frames)

            uvicorn.terminate()
            started = time.monotonic()

            def gone(c: Client) -> bool:
                left = {rid for f in c.frames[mark:] if f["type"] == "room" for rid in f["left"]}
                return c.online == 1 and c.counts.get(room) == 1 and reader.you[room] in left

            try:
                await observer.wait_until(gone, timeout=GRACEFUL_DEADLINE)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n-- uvicorn's output --\n{uvicorn.output}") from None
            print(f"\nuvicorn SIGTERM convergence: {time.monotonic() - started:.2f} s")
            # uvicorn re-raises the signal it stopped on once shut down: killed by SIGTERM, gracefully.
            assert await asyncio.to_thread(uvicorn.wait, 15) in (0, -signal.SIGTERM), uvicorn.output
            output = uvicorn.output
            assert "Application shutdown complete" in output, output
            assert "Traceback" not in output, output
            # Closing the sockets alone lets the readers go (each consumer unregisters); only the
            # lifespan's hub shutdown also drops the process from the store's live processes at once.
            assert await _live_processes(redis_url, redis_prefix) == 1, "the stopped process is still registered"
        finally:
            await asyncio.gather(*(client.close() for client in opened))


async def _live_processes(redis_url: str, prefix: str) -> int:
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(redis_url)
    try:
        return await client.zcard(f"{prefix}:{{g}}:procs")
    finally:
        await client.aclose()
