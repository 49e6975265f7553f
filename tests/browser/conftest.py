"""Fixtures of the browser tests: a migrated SQLite site, a Daphne serving it, headless Chromium.

Chromium is Debian's ``/usr/bin/chromium`` (``make test`` installs it on Debian as root), driven by
Playwright's Python package; Playwright's own browser downloads are never used. Without Chromium
the tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CI
from tests.support.servers import ROOT, DaphneServer, migrate_database, server_env

CHROMIUM = os.environ.get("PRESENCE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _missing(message: str):
    if CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium for a test module. Not longer: while Playwright's sync API is started,
    its event loop counts as running in this thread, and async tests after it would fail."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"no Chromium at {CHROMIUM}: `apt-get install chromium` "
                 "(docs/development.md, 'The browser tests and the screenshots')")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed: `make install`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def site_db(tmp_path_factory):
    """A migrated SQLite database (articles seeded) with the demo user demo/demo."""
    url, pks = migrate_database(tmp_path_factory.mktemp("presence-browser"), "")
    env = server_env("", url, "presence-test-browser")
    done = subprocess.run(
        [sys.executable, "manage.py", "create_demo_user"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return url, pks


def _site_env(database_url: str, language: str = "", **tunables: float) -> dict[str, str]:
    env = server_env("", database_url, "presence-test-browser", **tunables)
    env.update(
        DEBUG="1", ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SETTINGS_MODULE="tests.browser.site_settings", PRESENCE_TEST_LANGUAGE_CODE=language,
    )
    return env


@pytest.fixture
def site(site_db):
    """A Daphne serving the demo blog (DEBUG on: it serves static files; in-memory store)."""
    with DaphneServer(_site_env(site_db[0]), name="browser-daphne") as server:
        server.base = f"http://127.0.0.1:{server.port}"
        yield server


@pytest.fixture
def start_site(site_db):
    """``start_site(language="zh-hans", min_session_seconds=0)``: a demo Daphne of the test's own,
    in another language or with other app settings; stopped after the test."""
    servers = []

    def start(language: str = "", **tunables: float) -> DaphneServer:
        server = DaphneServer(_site_env(site_db[0], language, **tunables), name="browser-daphne").start()
        servers.append(server)
        server.base = f"http://127.0.0.1:{server.port}"
        return server

    yield start
    for server in servers:
        server.stop()
