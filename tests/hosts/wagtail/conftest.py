"""Fixtures of the Wagtail host: its test database seeded once (``manage.py seed_pages`` and three
users), a Daphne process serving that database, and headless Chromium.

Migrations are skipped (tables straight from the models, as ``--no-migrations``): Wagtail's
hundred-odd migrations would take most of the run's time; ``seed_pages`` creates what Wagtail's
initial migration would (root page, locale, default site).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

HOST = Path(__file__).resolve().parent
CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM = os.environ.get("PRESENCE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PASSWORD = "wagtail-host-password"
ORIGIN = "http://127.0.0.1"


def pytest_configure(config):
    config.option.nomigrations = True


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """A SQLite test database in a file (not in memory), so that Daphne processes can open it."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("hostwagtail") / "test.sqlite3")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The seeded blog and its users, committed: visible to every test and to server processes."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.core.management import call_command

    with django_db_blocker.unblock():
        call_command("seed_pages", stdout=open(os.devnull, "w"))
        User = get_user_model()
        User.objects.create_superuser("admin", "admin@example.com", PASSWORD)
        # An editor: may use Wagtail's admin, edit pages and see the reading history (a group's view permission).
        editors = Group.objects.create(name="Readership editors")
        editors.permissions.add(
            Permission.objects.get(content_type__app_label="wagtailadmin", codename="access_admin"),
            Permission.objects.get(content_type__app_label="presence", codename="view_readingsession"),
        )
        from wagtail.models import GroupPagePermission, Page

        root = Page.get_first_root_node()
        for codename in ("add_page", "change_page", "publish_page"):
            permission = Permission.objects.get(codename=codename)
            GroupPagePermission.objects.create(group=editors, page=root, permission=permission)
        editor = User.objects.create_user("editor", "editor@example.com", PASSWORD)
        editor.groups.add(editors)
        # A moderator: Wagtail's admin but not the history; a reader: no admin at all.
        moderators = Group.objects.create(name="Moderators")
        moderators.permissions.add(Permission.objects.get(codename="access_admin"))
        User.objects.create_user("moderator", "moderator@example.com", PASSWORD).groups.add(moderators)
        User.objects.create_user("reader", "reader@example.com", PASSWORD)


@pytest.fixture(scope="session")
def posts(django_db_setup, django_db_blocker) -> dict:
    """Seeded posts by slug: ``{"live-post": BlogPage, ...}``."""
    from pages.models import BlogPage

    with django_db_blocker.unblock():
        return {page.slug: page for page in BlogPage.objects.all()}


def database_url() -> str:
    """The URL of the test database, for server processes (after pytest-django created it)."""
    from django.db import connection

    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + settings["NAME"]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daphne:
    """``daphne hostwagtail.asgi:application`` on a free loopback port, run from the host's folder."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.log = tempfile.NamedTemporaryFile(prefix="hostwagtail-daphne-", suffix=".log", delete=False)
        self.port = free_port()
        command = [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(self.port),
                   "hostwagtail.asgi:application"]
        self.proc = subprocess.Popen(command, cwd=HOST, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while f"Listening on TCP address 127.0.0.1:{self.port}" not in self.output:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"Daphne did not start:\n{self.output}")
            time.sleep(0.05)
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/ws/presence/"

    @property
    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def get(self, path: str) -> tuple[int, object]:
        """GET a JSON path of the API: ``(status, body)``."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


@pytest.fixture(scope="module")
def server(django_db_setup):
    """A Daphne serving the seeded test database (in-memory store: counts start at zero)."""
    import presence

    env = dict(os.environ)
    source = str(Path(presence.__file__).resolve().parent.parent)  # site-packages, or a source tree
    env.update(
        DJANGO_SETTINGS_MODULE="hostwagtail.settings",
        PYTHONPATH=os.pathsep.join([str(HOST), source]),
        PYTHONUNBUFFERED="1",
        DATABASE_URL=database_url(),
        REDIS_URL="",
    )
    daphne = Daphne(env)
    yield daphne
    daphne.stop()


@pytest.fixture(scope="session")
def chromium_launcher():
    """``with chromium_launcher() as browser``: headless Debian Chromium through Playwright (never
    Playwright's downloads)."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        message = f"no Chromium at {CHROMIUM}: `apt-get install chromium`"
        pytest.fail(message) if CI else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    @contextlib.contextmanager
    def launch():
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()

    return launch


@pytest.fixture(scope="session")
def login_cookie(django_db_blocker):
    """``login_cookie("editor", base_url)``: a session cookie of that user for a browser context."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    def make(username: str, base: str) -> dict:
        with django_db_blocker.unblock():
            client = Client()
            client.force_login(get_user_model().objects.get(username=username))
        value = client.cookies[settings.SESSION_COOKIE_NAME].value
        return {"name": settings.SESSION_COOKIE_NAME, "value": value, "url": base}

    return make
