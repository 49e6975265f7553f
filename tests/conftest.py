"""Shared fixtures: a Redis for the tests (real, never flushed), store backends, WebSocket clients."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest
from channels.testing import WebsocketCommunicator

from tests.support.ports import free_port
from tests.support.servers import DaphneServer, ServerProcess, UvicornServer, server_env

CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashes():
    """The test processes' password hashers (tests/process_settings.py) for the whole suite."""
    from django.test import override_settings

    from tests.process_settings import PASSWORD_HASHERS

    with override_settings(PASSWORD_HASHERS=PASSWORD_HASHERS):
        yield


class PatientCommunicator(WebsocketCommunicator):
    """Channels' test client, waiting up to 5 s for a handshake or a frame instead of its default 1 s:
    on a loaded CI machine (a Redis cluster most of all) an answer can take longer than a second.
    Tests that wait for nothing (``receive_nothing``) keep their own short timeout."""

    async def connect(self, timeout=5):  # noqa: ASYNC109 (Channels' signature)
        return await super().connect(timeout)

    async def receive_from(self, timeout=5):  # noqa: ASYNC109 (Channels' signature)
        return await super().receive_from(timeout)

    async def receive_json_from(self, timeout=5):  # noqa: ASYNC109 (Channels' signature)
        return await super().receive_json_from(timeout)

    async def disconnect(self, code=1000, timeout=5):  # noqa: ASYNC109 (Channels' signature)
        return await super().disconnect(code, timeout)


def _answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url():
    """``REDIS_URL`` if set, else the machine's Redis, else a throwaway ``redis-server``."""
    url = os.environ.get("REDIS_URL")
    if url:
        if not _answers(url):
            pytest.fail(f"REDIS_URL={url} does not answer")
        yield url
        return
    if _answers("redis://127.0.0.1:6379/0"):
        yield "redis://127.0.0.1:6379/0"
        return
    server = shutil.which("redis-server")
    if server is None:
        message = "no Redis: set REDIS_URL, run one on 127.0.0.1:6379, or install redis-server"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="presence-redis-")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1"]
        + ["--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _answers(url):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the throwaway redis-server did not start")
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_prefix(redis_url):
    """A key prefix of this test's own; its keys are deleted afterwards (never FLUSHDB)."""
    import redis

    prefix = f"presence-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _servers(count: int, cluster: bool):
    """Throwaway redis-servers (``tests/support/cluster.py``); skipped when not installed, except on CI."""
    from tests.support.cluster import ServerMissing, Servers

    try:
        return Servers(count, cluster=cluster)
    except ServerMissing as missing:
        if CI:
            pytest.fail(str(missing))
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def redis_cluster():
    """A throwaway three-master Redis Cluster (``tests/support/cluster.py``); None with ``REDIS_CLUSTER_URL``."""
    if os.environ.get("REDIS_CLUSTER_URL"):
        yield None
        return
    servers = _servers(3, cluster=True)
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster):
    """A node of ``REDIS_CLUSTER_URL`` if set, else of the throwaway cluster."""
    return redis_cluster.urls[0] if redis_cluster else os.environ["REDIS_CLUSTER_URL"]


def redis_client(url: str, cluster: bool = False, **options):
    """An asyncio client of a plain Redis or of a cluster (any node's URL)."""
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, **options)
    import redis.asyncio as aredis

    return aredis.Redis.from_url(url, **options)


REDIS_BACKENDS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]


@pytest.fixture(params=["memory", *REDIS_BACKENDS])
async def store_factory(request):
    """``make(proc)`` -> a store view for a server process; all views of a test share state."""
    made = []
    if request.param == "memory":
        from presence.store.memory import MemoryState, MemoryStore

        state = MemoryState()

        def make(proc: str):
            made.append(MemoryStore(proc, state=state))
            return made[-1]

        async def wipe():
            fresh = MemoryState()
            for name in vars(fresh):
                setattr(state, name, getattr(fresh, name))

    else:
        from presence.store.redis import RedisStore

        cluster = request.param == "redis-cluster"
        if cluster:
            # A throwaway cluster, or REDIS_CLUSTER_URL: the test's keys are deleted afterwards.
            url = request.getfixturevalue("redis_cluster_url")
            prefix = f"presence-test-{uuid.uuid4().hex[:12]}"
        else:
            url = request.getfixturevalue("redis_url")
            prefix = request.getfixturevalue("redis_prefix")

        def make(proc: str):
            made.append(RedisStore(proc, url=url, prefix=prefix, cluster=cluster))
            return made[-1]

        async def wipe():
            client = redis_client(url, cluster)
            keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await client.delete(*keys)  # a cluster client deletes slot by slot
            await client.aclose()

    make.wipe = wipe
    make.backend = request.param
    yield make
    if request.param == "redis-cluster" and made:
        # Through a store's client: a new cluster client would first fetch the command table.
        client = made[0]._client()
        keys = [k async for k in client.scan_iter(match=f"{made[0].prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    for store in made:
        await store.close()


@pytest.fixture
def wipe_store(store_factory):
    """Lose every key of the store, as a Redis restart without persistence does."""
    return store_factory.wipe


# -- protocol tests: an injected clock, a hub driven by the test, WebSocket clients ----------


class FakeClock:
    """A clock the test moves by hand (seconds since the epoch). By default it starts half a
    millisecond past a whole second: the hub stamps in whole milliseconds (``int(t * 1000)``), and
    steps of 0.001 s added to a start on a millisecond boundary land a float's width short of the
    next one now and then, giving two moves a millisecond apart the same stamp (a flaky order)."""

    def __init__(self, start: float | None = None):
        self.now = math.floor(time.time()) + 0.0005 if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def steady_pacing(clock, aligned: bool = True):
    """The hub's pacing with the machine's CPU use left out: a test's frames are due when its clock
    says, however busy the machine running the suite is."""
    from presence.conf import app_settings
    from presence.pacing import Pacing

    return Pacing(app_settings.TICK, app_settings.COALESCE_WINDOW, clock, meter=lambda: 0.0, aligned=aligned)


@pytest.fixture
async def hub(store_factory, clock):
    """The process hub over each store backend, with the test's clock and no tick loop."""
    from presence import history, rooms
    from presence.hub import Hub, set_hub

    rooms.cache_clear()
    history.recorder.reset()
    store = store_factory("test-proc-a")
    hub = Hub(store=store, autotick=False, pacing=steady_pacing(clock, store.spans_processes), clock=clock)
    set_hub(hub)
    yield hub
    await hub.settled()  # sessions ended by `leave` frames are written before the database is flushed
    await hub.stop()
    set_hub(None)
    rooms.cache_clear()


@pytest.fixture
async def hubs(store_factory, clock):
    """Two hubs (two server processes) sharing one store and one channel layer, on the test's clock."""
    from presence import rooms
    from presence.hub import Hub

    rooms.cache_clear()
    made = []
    for name in ("proc-a", "proc-b"):
        hub = Hub(store=store_factory(name), autotick=False, pacing=steady_pacing(clock), clock=clock)
        made.append(hub)
        await hub.start()
    yield made
    for hub in made:
        await hub.settled()
        await hub.stop()


@pytest.fixture
async def ws(hub):
    """Open WebSocket connections to the presence endpoint: ``await ws(session=...)``."""
    from presence.routing import websocket_application

    app = websocket_application()
    opened = []

    async def connect(session=None, cookie=None, origin=b"http://localhost", expect_accept=True):
        path = "/ws/presence/" + (f"?session={session}" if session else "")
        headers = [(b"origin", origin)] if origin is not None else []
        if cookie:
            headers.append((b"cookie", cookie.encode()))
        client = PatientCommunicator(app, path, headers=headers)
        connected, _ = await client.connect()
        if not expect_accept:
            return connected
        assert connected, "the handshake was refused"
        opened.append(client)
        return client

    yield connect
    for client in opened:
        with contextlib.suppress(BaseException):
            await client.disconnect()


@pytest.fixture
def make_user(db):
    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model

    async def make(username: str):
        create_user = sync_to_async(get_user_model().objects.create_user)
        return await create_user(username, f"{username}@example.com", "pw")

    return make


@pytest.fixture
def user_cookie(make_user):
    """A session cookie header value for a signed-in user (made if missing)."""
    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model
    from django.test import Client

    def login(username: str) -> str:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            user = get_user_model().objects.create_user(username, f"{username}@example.com", "pw")
        client = Client()
        client.force_login(user)
        return f"sessionid={client.cookies['sessionid'].value}"

    return sync_to_async(login)


@pytest.fixture
def signed_in_browser(db):
    """``await signed_in_browser(user)`` -> a Django test ``Client`` signed in as the user (a
    browser with a session cookie of its own) and the identity token a page of it gets from
    ``GET /api/presence/token/``."""
    from asgiref.sync import sync_to_async
    from django.test import Client

    def sign_in(user):
        browser = Client()
        browser.force_login(user)
        response = browser.get("/api/presence/token/")
        assert response.status_code == 200, response.content
        return browser, response.json()["token"]

    return sync_to_async(sign_in)


@pytest.fixture
def user_token(signed_in_browser):
    """``await user_token(user)`` -> an identity token of a fresh signed-in session of the user."""

    async def make(user) -> str:
        return (await signed_in_browser(user))[1]

    return make


@pytest.fixture
async def articles(db):
    from asgiref.sync import sync_to_async

    from blog.models import Article

    def make():
        return [
            Article.objects.create(title=f"Test article {n}", slug=f"test-article-{n}", body="Words. " * 50)
            for n in range(12)
        ]

    return await sync_to_async(make)()


@pytest.fixture
def article(articles):
    return articles[0]


@pytest.fixture
def recorded_events():
    """Every presence domain event sent during the test, in order."""
    from presence import events

    seen = []

    def receiver(sender, event, **kwargs):
        seen.append(event)

    events.reader_joined.connect(receiver)
    events.reader_left.connect(receiver)
    yield seen
    events.reader_joined.disconnect(receiver)
    events.reader_left.disconnect(receiver)


@pytest.fixture
def fresh_caches():
    """Empty Django's cache (DRF throttles, beacon positions) and the room resolutions around a
    test, and forget any store it installed."""
    from django.core.cache import cache

    import presence.store
    from presence import rooms

    cache.clear()
    rooms.cache_clear()
    yield
    cache.clear()
    rooms.cache_clear()
    presence.store.reset()


# -- real server processes: for a module that defines ``site_db`` (``tests.support.servers.migrate_database``) --


@pytest.fixture
def room(site_db) -> str:
    """The room of the first article seeded in the module's database."""
    return f"article:{site_db[1][0]}"


@pytest.fixture
def servers(site_db, redis_url, redis_prefix):
    """``start(name, args=(), server="daphne", **tunables)`` -> a running Daphne (with more
    options ``args``) or uvicorn on the module's database and this test's Redis prefix; all
    stopped afterwards."""
    started: list[ServerProcess] = []

    def start(name: str, args: tuple = (), server: str = "daphne", **tunables: float) -> ServerProcess:
        env = server_env(redis_url, site_db[0], redis_prefix, **tunables)
        if server == "uvicorn":
            assert not args, "args are Daphne's options"
            process = UvicornServer(env, name=name)
        else:
            process = DaphneServer(env, name=name, args=args)
        started.append(process)
        return process.start()

    yield start
    for server in started:
        server.close()
