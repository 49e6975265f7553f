"""Fixtures shared by the host projects (tests/hosts/<host>/): their database, their server
processes, Redis, Chromium and axe-core, and a guard that ``presence`` is the installed wheel.

A host test runs in its host's settings (``--ds=host<host>.settings``) on pytest-django's test
database. Server processes (``host_server``) are Daphnes of the hosts venv serving the host's
``asgi.py`` on that same database, so what a test sees through Django's client and what a
browser sees through a server are one site. That database is a file for SQLite (a server
process cannot share an in-memory one) and ``test_<name>`` for PostgreSQL (``DATABASE_URL``).
Articles and other fixtures of a host load once per session; tests that need writes from
servers to be visible use ``live_db`` (autocommit, never rolled back) instead of ``db``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

HOSTS = Path(__file__).resolve().parent
REPOSITORY = HOSTS.parent.parent
CI = os.environ.get("CI", "").lower() == "true"
# Set to run the hosts on a source checkout on PYTHONPATH (quicker while editing presence/);
# `make test-hosts` and CI never set it, so there the wheel is what runs.
FROM_SOURCE = os.environ.get("PRESENCE_FROM_SOURCE") == "1"

CHROMIUM = os.environ.get("PRESENCE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
AXE = REPOSITORY / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"


def _missing(message: str):
    if CI:
        pytest.fail(message)
    pytest.skip(message)


# -- the guard: the app under test is the installed wheel -----------------------------------------


def _installed_presence() -> Path:
    import presence

    return Path(presence.__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    where = _installed_presence()
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    if not where.is_relative_to(site_packages) and not FROM_SOURCE:
        raise pytest.UsageError(
            f"`presence` was imported from {where}, not from {site_packages}: the host tests run the "
            "installed wheel. Run them with `make test-hosts` (or from tests/hosts/ with "
            "../../.venv-hosts/bin/python -P -m pytest <host> --ds=host<host>.settings)."
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    import django

    lines = [f"hosts: presence from {_installed_presence()}, Django {django.get_version()}"]
    if FROM_SOURCE:
        lines.append("hosts: PRESENCE_FROM_SOURCE=1: running a source checkout, not the wheel")
    return lines


# -- the host a test belongs to, and its database --------------------------------------------------


def host_of(path: Path) -> str:
    """The host folder (``blog``, ``wagtail``) a test file lives in."""
    return Path(path).resolve().relative_to(HOSTS).parts[0]


@pytest.fixture
def host(request) -> str:
    return host_of(request.path)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory) -> None:
    """An SQLite test database in a file, so that server processes open the same database."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("host-db") / "test.sqlite3")


@pytest.fixture(scope="session")
def django_db_setup(request, django_test_environment, django_db_blocker, django_db_use_migrations, django_db_keepdb,
                    django_db_modify_db_settings):
    """The test database, migrated, with the fixtures of the host folders collected
    (``<host>/*/fixtures/*.json``) committed once for the session. Made whenever a test needs
    it, through pytest-django's ``db`` or through the server fixtures (pytest-django's own
    fixture would make it only for tests marked ``django_db``)."""
    from django.core.management import call_command
    from django.test.utils import setup_databases, teardown_databases

    fixtures = sorted(
        {path.stem for item in request.session.items for path in HOSTS.glob(f"{host_of(item.path)}/*/fixtures/*.json")}
    )
    verbosity = request.config.option.verbose
    if not django_db_use_migrations:  # --no-migrations (a host's conftest may set it: Wagtail's)
        from pytest_django.fixtures import _disable_migrations

        _disable_migrations()
    with django_db_blocker.unblock():
        databases = setup_databases(verbosity=verbosity, interactive=False, keepdb=django_db_keepdb,
                                    aliases={"default"})
        if fixtures:
            call_command("loaddata", *fixtures, verbosity=0)
    yield
    if not django_db_keepdb:
        with django_db_blocker.unblock():
            _end_other_sessions()
            teardown_databases(databases, verbosity=verbosity)


def _end_other_sessions() -> None:
    """PostgreSQL refuses to drop a database others are connected to: a thread's connection
    (``sync_to_async`` in a test) or a server process that died without closing its own."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def _postgres_url(database: dict, name: str) -> str:
    credentials = quote(database["USER"] or "")
    if database.get("PASSWORD"):
        credentials += ":" + quote(database["PASSWORD"])
    port = f":{database['PORT']}" if database.get("PORT") else ""
    return f"postgres://{credentials}@{database['HOST'] or '127.0.0.1'}{port}/{name}"


def _postgres_admin(database: dict):
    """An autocommit connection to the server's ``postgres`` database (CREATE/DROP DATABASE)."""
    import psycopg

    options = {"host": "HOST", "port": "PORT", "user": "USER", "password": "PASSWORD"}
    params = {key: database[setting] for key, setting in options.items() if database.get(setting)}
    return psycopg.connect(dbname="postgres", autocommit=True, **params)


@pytest.fixture(scope="session")
def database_url(django_db_setup, django_db_blocker) -> str:
    """A ``DATABASE_URL`` of the test database, for server processes of the host."""
    from django.db import connection

    database = connection.settings_dict
    if database["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{database['NAME']}"
    if database["ENGINE"].endswith("postgresql"):
        return _postgres_url(database, database["NAME"])
    raise RuntimeError(f"no URL for a {database['ENGINE']} test database")


@pytest.fixture
def live_db(django_db_setup, django_db_blocker):
    """The test database in autocommit: rows that server processes write are visible at once.
    Nothing is rolled back: tests using it make rows of their own (unique names)."""
    with django_db_blocker.unblock():
        yield


def manage(host: str, database_url: str, *args: str, env: dict[str, str] | None = None) -> str:
    """``python manage.py <args>`` of a host in a process of its own (the hosts venv); its output."""
    folder = HOSTS / host
    environment = dict(os.environ, DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE=f"host{host}.settings")
    pythonpath = [str(folder)] + ([os.environ["PYTHONPATH"]] if FROM_SOURCE and os.environ.get("PYTHONPATH") else [])
    environment["PYTHONPATH"] = os.pathsep.join(pythonpath)
    environment.update(env or {})
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=folder, env=environment, capture_output=True,
                          text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


@pytest.fixture
def manage_py(host, database_url):
    """``manage_py(*args, env={...}, database_url=...)``: the host's manage.py in a process of its
    own, on the test database unless told; its output (an AssertionError when it fails)."""

    def run(*args: str, env: dict[str, str] | None = None, database_url: str = database_url) -> str:
        return manage(host, database_url, *args, env=env)

    return run


@pytest.fixture
def scratch_database(host, django_db_setup, tmp_path):
    """``make(*commands) -> DATABASE_URL``: a new database of the host's engine (SQLite file, or a
    PostgreSQL database of its own, dropped afterwards), migrated, then each command (a list of
    ``manage.py`` arguments) run on it. For what the shared test database must not see."""
    from django.db import connection

    database = connection.settings_dict
    dropped: list[str] = []

    def make(*commands: list[str]) -> str:
        if database["ENGINE"].endswith("postgresql"):
            name = f"{host}_scratch_{uuid.uuid4().hex[:12]}"
            with _postgres_admin(database) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            dropped.append(name)
            url = _postgres_url(database, name)
        else:
            url = f"sqlite:///{tmp_path / f'scratch-{uuid.uuid4().hex[:8]}.sqlite3'}"
        manage(host, url, "migrate", "--noinput", "-v", "0")
        for command in commands:
            manage(host, url, *command)
        return url

    yield make
    if dropped:
        with _postgres_admin(database) as admin:
            for name in dropped:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- server processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HostServer:
    """``daphne host<host>.asgi:application`` of the hosts venv, on a free loopback port, with the
    host's folder as working directory and ``PYTHONPATH`` (so ``presence`` is the installed one).

    DEBUG is on (the README's ``asgi.py`` then serves static files); ``env`` adds or overrides
    variables (``REDIS_URL``, ``REDIS_PREFIX``); ``args`` are more Daphne options
    (``--proxy-headers``). A context manager: leaving it terminates the
    process, then kills it if it lingers; its output is in ``output`` (shown when it fails to start).
    """

    def __init__(self, host: str, database_url: str, env: dict[str, str] | None = None, name: str | None = None,
                 args: tuple[str, ...] = ()):
        self.host = host
        self.args = tuple(args)
        self.name = name or f"{host}-daphne"
        self.folder = HOSTS / host
        self.env = dict(os.environ)
        source = self.env.pop("PYTHONPATH", None) if FROM_SOURCE else None
        self.env.pop("PYTHONPATH", None)
        pythonpath = [str(self.folder)] + ([source or str(REPOSITORY)] if FROM_SOURCE else [])
        self.env.update(
            DJANGO_SETTINGS_MODULE=f"host{host}.settings",
            PYTHONPATH=os.pathsep.join(pythonpath),
            PYTHONUNBUFFERED="1",
            DEBUG="1",
            DATABASE_URL=database_url,
        )
        self.env.update(env or {})
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"presence-{self.name}-", suffix=".log", delete=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/presence/"

    @property
    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def start(self, timeout: float = 30.0) -> HostServer:
        daphne = Path(sys.executable).parent / "daphne"
        for _attempt in range(3):  # a free port may be taken between probing and binding it
            self.port = free_port()
            self.proc = subprocess.Popen(
                [str(daphne), "-b", "127.0.0.1", "-p", str(self.port), *self.args, f"host{self.host}.asgi:application"],
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            # Daphne's own log line, not a probe of the port (a probe confuses its SIGTERM handler).
            ready = f"Listening on TCP address 127.0.0.1:{self.port}"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None and ready not in self.output:
                time.sleep(0.05)
            if ready in self.output:
                return self
            if "Address already in use" not in self.output:
                break
        output = self.output
        self.stop()
        raise RuntimeError(f"{self.name} did not start; its output:\n{output}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def __enter__(self) -> HostServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info) -> None:
        self.close()


@pytest.fixture
def host_server(host, database_url):
    """``host_server(**env)``: a started ``HostServer`` of the test's host on the test database
    (``DATABASE_URL=`` for another); all stop after the test."""
    servers: list[HostServer] = []

    def start(name: str | None = None, **env: str) -> HostServer:
        server = HostServer(host, env.pop("DATABASE_URL", database_url), env, name=name)
        servers.append(server)
        return server.__enter__()

    yield start
    for server in servers:
        server.close()


# -- Redis -----------------------------------------------------------------------------------------


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
def redis_url() -> str:
    """``REDIS_URL`` if set, else the machine's Redis on 127.0.0.1:6379."""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if not _answers(url):
        _missing(f"no Redis at {url}: set REDIS_URL or start redis-server")
    return url


@pytest.fixture
def redis_prefix(redis_url):
    """A key prefix of this test's own (``REDIS_PREFIX`` of a host); its keys go afterwards
    (never FLUSHDB: the Redis may be shared)."""
    import redis

    prefix = f"presence-host-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# -- WebSocket clients -----------------------------------------------------------------------------


class Reader:
    """A protocol client over a real WebSocket (``websockets``): the frames it got, in order."""

    def __init__(self, ws):
        self.ws = ws
        self.frames: list[dict] = []

    async def send(self, **frame) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict:  # noqa: ASYNC109 (a test helper's deadline)
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def wait_for(self, predicate, timeout: float = 10.0) -> dict:  # noqa: ASYNC109
        """The first frame (read from now on) for which ``predicate(frame)`` holds."""
        deadline = time.monotonic() + timeout
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = await self.recv(left)
            except TimeoutError:
                break
            if predicate(frame):
                return frame
            seen.append(frame)
        raise AssertionError(f"no matching frame within {timeout} s; saw {seen}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)


@pytest.fixture
async def reader():
    """``await reader(url, session=...)``: a connected ``Reader`` whose first frame (``hello``)
    is in ``frames``; all are closed after the test."""
    import websockets

    opened: list[Reader] = []

    async def connect(url: str, session: str | None = None, origin: str | None = None, **kwargs) -> Reader:
        if origin is None:  # the page's own origin: scheme, host and port count (presence/origins.py)
            scheme, rest = url.split("://", 1)
            origin = ("https" if scheme == "wss" else "http") + "://" + rest.split("/", 1)[0]
        target = url + (f"?session={session}" if session else "")
        client = Reader(await websockets.connect(target, origin=origin, open_timeout=10, **kwargs))
        opened.append(client)
        hello = await client.recv(10)
        assert hello["type"] == "hello", hello
        return client

    yield connect
    for client in opened:
        await client.close()


# -- the database beside a browser -----------------------------------------------------------------


def in_thread(function, *args):
    """``function(*args)`` in a thread of its own, whose database connections close afterwards.
    While Playwright's sync API runs, Django takes the test's thread for async code: it refuses
    database calls there, and a connection opened anyway would be another one, left open
    (PostgreSQL then cannot drop the test database)."""
    from django.db import connections

    def call():
        try:
            return function(*args)
        finally:
            connections.close_all()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


@pytest.fixture(scope="session")
def orm(django_db_setup, django_db_blocker):
    """``orm(function, *args)``: its result, computed with database access in a thread of its own
    (``in_thread``), as browser tests must: they take no ``django_db`` transaction, and what they
    read is what the host's servers wrote (autocommit; nothing is rolled back)."""

    def run(function, *args):
        with django_db_blocker.unblock():
            return in_thread(function, *args)

    return run


# -- Chromium, a server shared by a module's browser tests, axe-core ------------------------------


@pytest.fixture(scope="module")
def chromium():
    """Headless Debian Chromium through Playwright's Python package (never Playwright's own
    browser downloads), for one test module: while Playwright's sync API runs, its event loop
    counts as running in this thread, so async tests after it would fail, and so would a
    ``django_db`` transaction (browser tests use ``orm`` instead)."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (docs/development.md)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed: `make test-hosts` installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shared_server(request, database_url):
    """One Daphne of the module's host for all its browser tests, on the in-memory store (whatever
    ``REDIS_URL`` says): each test starts once nobody is online (``browsing``), and its readers
    leave when its pages close."""
    host = host_of(request.path)
    with HostServer(host, database_url, {"REDIS_URL": ""}, name=f"{host}-shared-daphne") as server:
        yield server


VIEWPORT = {"width": 1100, "height": 700}


@dataclass(frozen=True)
class Box:
    """An element's box in viewport pixels."""

    left: float
    top: float
    right: float
    bottom: float

    def grown(self, by: float) -> Box:
        return Box(self.left - by, self.top - by, self.right + by, self.bottom + by)

    def inside(self, outer: Box) -> bool:
        return (self.left >= outer.left and self.right <= outer.right
                and self.top >= outer.top and self.bottom <= outer.bottom)

    def overlaps(self, other: Box) -> bool:
        return (self.left < other.right and other.left < self.right
                and self.top < other.bottom and other.top < self.bottom)


class WidgetPage:
    """A host's page with the widget, as its reader sees it (Playwright's page is ``page``).

    Selectors hold for any markup the widget has had: markers are ``.presence-marker`` elements
    with ``data-reader`` in ``[data-presence-track]``, focusable themselves or through a button."""

    def __init__(self, page):
        self.page = page

    def markers(self) -> list[dict]:
        return self.page.eval_on_selector_all(
            "[data-presence-track] .presence-marker",
            """els => els.map(e => ({
                id: e.dataset.reader,
                own: e.classList.contains('presence-marker-own'),
                position: parseFloat(e.style.getPropertyValue('--presence-position')),
                label: (e.querySelector('button') || e).getAttribute('aria-label'),
            }))""",
        )

    def wait(self, probe, condition, timeout: float = 10.0, what: str = "the page"):
        """``probe()`` until ``condition`` holds of what it returns (that value), else fail."""
        deadline = time.monotonic() + timeout
        while not condition(seen := probe()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: never matched within {timeout} s; last seen {seen!r}")
            self.page.wait_for_timeout(100)
        return seen

    def wait_markers(self, condition, timeout: float = 10.0) -> list[dict]:
        return self.wait(self.markers, condition, timeout, "markers")

    def own(self) -> dict:
        """The reader's own marker (the square one), once drawn."""
        return next(m for m in self.wait_markers(lambda seen: any(m["own"] for m in seen)) if m["own"])

    def alone(self) -> str:
        """The id of the only reader of this page's article: this page's own (marked or not)."""
        return self.wait_markers(lambda seen: len(seen) == 1)[0]["id"]

    def newcomer(self, known: set[str]) -> str:
        """The id of the one reader on the timeline who is not in ``known``."""
        seen = self.wait_markers(lambda m: len({x["id"] for x in m} - known) == 1)
        return next(m["id"] for m in seen if m["id"] not in known)

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector).strip()

    def wait_text(self, selector: str, expected: str, timeout: float = 10.0) -> str:
        return self.wait(lambda: self.text(selector), lambda text: text == expected, timeout, selector)

    def wait_number(self, selector: str, expected: int, timeout: float = 10.0) -> str:
        """Until the text of ``selector`` shows ``expected`` readers, in whatever language."""
        shown = lambda text: (found := re.search(r"\d+", text)) is not None and int(found.group()) == expected  # noqa: E731
        return self.wait(lambda: self.text(selector), shown, timeout, selector)

    @staticmethod
    def focusable(reader_id: str) -> str:
        """A reader's marker, where it takes focus: its button, or itself in a markup without one."""
        marker = f'[data-presence-track] .presence-marker[data-reader="{reader_id}"]'
        return f"{marker} button, {marker}:not(:has(button))"

    def scroll_to(self, fraction: float) -> None:
        """Scroll so that ``fraction`` of the article is read (as the widget measures it), at once."""
        self.page.evaluate(
            """f => {
                const a = document.querySelector('article');
                const top = a.getBoundingClientRect().top + scrollY;
                scrollTo({top: top + f * (a.offsetHeight - innerHeight), behavior: 'instant'});
            }""",
            fraction,
        )

    def position(self) -> float:
        """How far through the article the viewport is, as the widget measures it."""
        return self.page.evaluate(
            "() => { const r = document.querySelector('article').getBoundingClientRect();"
            " return -r.top / (r.height - innerHeight); }"
        )

    def box(self, selector: str) -> Box:
        found = self.page.evaluate(  # in one go: the element found is the element measured
            "s => { const e = document.querySelector(s); if (!e) return null;"
            " const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }",
            selector,
        )
        assert found is not None, f"no {selector} on the page"
        return Box(*found)

    def viewport(self) -> Box:
        width, height = self.page.evaluate("[document.documentElement.clientWidth, innerHeight]")
        return Box(0, 0, width, height)


class Browsing:
    """The browser contexts and pages of one test, on one host server; all closed after the test.
    Uncaught exceptions and console errors of every page are collected in ``errors``."""

    def __init__(self, browser, server: HostServer):
        self.browser = browser
        self.server = server
        self.base = server.base
        self.contexts: list = []
        self.errors: list[str] = []

    def context(self, **options):
        options.setdefault("viewport", VIEWPORT)
        context = self.browser.new_context(**options)
        self.contexts.append(context)
        return context

    def open(self, path: str, context=None, **options) -> WidgetPage:
        """A new page (in a new context, a new reader, unless ``context``) at ``path``; on an article
        page, once its reader is on the timeline."""
        page = (context or self.context(**options)).new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        page.on("console", lambda message: self._console(page, message))
        page.goto(self.base + path)
        widget = WidgetPage(page)
        if page.locator("[data-presence-track]").count():
            widget.wait_markers(bool)
        return widget

    def _console(self, page, message) -> None:
        # The hosts have no favicon; Chromium asks for one all the same.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            self.errors.append(f"{page.url}: {message.text}")

    def get(self, path: str):
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return json.load(response)

    def online(self) -> int:
        return self.get("/api/presence/online/")["online"]

    def count(self, room: str) -> int:
        return self.get(f"/api/presence/rooms/{room}/")["count"]

    def wait_count(self, room: str, expected: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (seen := self.count(room)) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"{room}: {seen} readers, never {expected}")
            time.sleep(0.1)

    def quiet(self, timeout: float = 10.0) -> None:
        """Wait until nobody is online (the readers of a test before have gone)."""
        deadline = time.monotonic() + timeout
        while (online := self.online()) != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{online} readers still online {timeout} s after the last test")
            time.sleep(0.1)

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def browsing(chromium, shared_server):
    """A ``Browsing`` on the module's shared server, from a quiet site; a page error fails the test."""
    browsing = Browsing(chromium, shared_server)
    browsing.quiet()
    yield browsing
    browsing.close()
    assert browsing.errors == [], "errors in the pages"


# axe-core's violations in the widget's elements (`.presence` and what is inside): the host's own
# are not the widget's to fix. Colours are still measured against the page around the widget.
AXE_RUN = """async (rules) => {
    const options = { resultTypes: ["violations"] };
    if (rules) options.runOnly = { type: "rule", values: rules };
    const results = await axe.run({ include: [[".presence"]] }, options);
    const ours = (node) => {
        const el = document.querySelector(node.target[0]);
        return el !== null && el.closest(".presence") !== null;
    };
    return results.violations
        .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                       nodes: v.nodes.filter(ours).map((n) => n.target.join(" ")) }))
        .filter((v) => v.nodes.length > 0);
}"""


@pytest.fixture
def axe():
    """``axe(page, rules=None) -> violations``: axe-core's findings (all its rules, or the rule ids
    given) in the widget's elements; axe-core is the npm package of tests/js/package-lock.json
    (`make test-hosts` installs it)."""
    if not AXE.exists():
        _missing(f"no axe-core at {AXE}: `npm ci --prefix tests/js` (make test-hosts does it)")

    def run(page, rules: list[str] | None = None) -> list[dict]:
        if not page.evaluate("typeof axe !== 'undefined'"):
            page.add_script_tag(path=str(AXE))
        return page.evaluate(AXE_RUN, rules)

    return run


SETTLED = "document.getAnimations().every(a => a.playState !== 'running')"  # markers glided, tooltips shown
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def axe_in_every_state(browsing, axe):
    """``run(article, listing, switch) -> {state: violations}`` (only states with violations): axe-core
    on the widget of an article read by three others (one named Ada), in light, dark by the system,
    dark by the site's switch (the ``switch`` selector), 390 px with the own marker focused, another
    reader's marker focused (its tooltip open); and on ``listing``, the page with the ranking."""

    def run(article: str, listing: str, switch: str) -> dict[str, list]:
        background: set[str] = set()
        for n, where in enumerate([0.2, 0.5, 0.8]):
            reader = browsing.open(article)
            background.add(reader.newcomer(background))
            if n == 0:
                reader.page.fill("[data-presence-name]", "Ada")
                reader.page.dispatch_event("[data-presence-name]", "change")
            reader.scroll_to(where)
        found = {}

        def check(state: str, page: WidgetPage) -> None:
            if page.page.locator("[data-presence-track]").count():
                page.wait_markers(lambda m: len(m) == 4 and sum(x["position"] > 0.1 for x in m) == 3)
            else:
                page.page.wait_for_selector("[data-presence-ranking-list] li")
            page.page.wait_for_function(SETTLED)
            found[state] = axe(page.page)

        light = browsing.open(article, color_scheme="light")
        check("light", light)
        ada = light.wait_markers(lambda m: any((x["label"] or "").startswith("Ada,") for x in m))
        light.page.focus(light.focusable(next(x["id"] for x in ada if x["label"].startswith("Ada,"))))
        check("another reader's marker focused", light)
        light.page.click(switch)
        assert light.page.evaluate("document.documentElement.dataset.theme") == "dark"
        check("dark (site switch)", light)
        light.page.goto(browsing.base + listing)  # the switch is kept (localStorage)
        check("dark (site switch), list", light)
        light.page.click(switch)
        check("light, list", light)

        dark = browsing.open(article, color_scheme="dark")
        check("dark (system)", dark)
        dark.page.goto(browsing.base + listing)
        check("dark (system), list", dark)

        phone = browsing.open(article, color_scheme="light", viewport=PHONE)
        phone.page.focus(phone.focusable(phone.newcomer(background)))  # its own marker
        check("390 px, own marker focused", phone)
        phone.page.goto(browsing.base + listing)
        check("390 px, list", phone)

        return {state: [(v["id"], v["nodes"]) for v in violations] for state, violations in found.items() if violations}

    return run
