"""Fixtures of the host blog's own tests: its Daphne processes, started once per module with the
settings an operator would give them, and a real nginx in front of one.

``blog_servers(name, args=(), **settings)`` starts a Daphne of the hosts venv on the blog's
``asgi.py`` (``tests/hosts/conftest.py``, ``HostServer``), with ``DEBUG`` off as in production.
Without ``settings`` it runs the blog's settings as shipped; with them, a settings module of the
operator's kind (``from hostblog.settings import *`` and the given ``PRESENCE_*`` lines), as a
site sets its per-deployment values.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

HOSTS = Path(__file__).resolve().parent.parent
CI = os.environ.get("CI", "").lower() == "true"


def _shared(config: pytest.Config):
    """The shared conftest of the host projects (its ``HostServer``); pytest registers conftest
    modules under their path."""
    module = config.pluginmanager.get_plugin(str(HOSTS / "conftest.py"))
    assert module is not None, "tests/hosts/conftest.py is not loaded"
    return module


@pytest.fixture(scope="module")
def blog_servers(request, database_url, tmp_path_factory):
    """``start(name, args=(), **settings) -> HostServer``: a running Daphne of the blog on the test
    database; all stop when the module ends."""
    host_server = _shared(request.config).HostServer
    folder = tmp_path_factory.mktemp("blog-settings")
    started = []

    def start(name: str, args: tuple[str, ...] = (), **settings) -> object:
        server = host_server("blog", database_url, {"DEBUG": "0"}, name=name, args=args)
        if settings:
            module = "settings_" + name.replace("-", "_")
            lines = "".join(f"{key} = {value!r}\n" for key, value in settings.items())
            (folder / f"{module}.py").write_text(
                f'"""The blog as deployed by {name}."""\n\nfrom hostblog.settings import *  # noqa: F403\n\n{lines}'
            )
            server.env["DJANGO_SETTINGS_MODULE"] = module
            server.env["PYTHONPATH"] += os.pathsep + str(folder)
        started.append(server)
        return server.__enter__()

    yield start
    for server in started:
        server.close()


NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $http_connection;
            proxy_set_header Host $http_host;
            # Appends the address nginx saw to whatever the client wrote, as most proxies do:
            # the app must believe the rightmost entry only.
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def nginx_in_front(request, tmp_path_factory):
    """``start(upstream_port) -> port``: Debian's nginx on a loopback port of its own, proxying
    HTTP and WebSockets to a server; stopped when the module ends."""
    binary = find_nginx()
    if binary is None:
        message = "nginx is not installed (make test installs it as root on Debian)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    procs: list[subprocess.Popen] = []

    def start(upstream: int) -> int:
        run = tmp_path_factory.mktemp("nginx")
        run.chmod(0o755)  # its workers (nobody, when started as root) write temp files there
        port = _shared(request.config).free_port()
        (run / "nginx.conf").write_text(NGINX_CONF.format(run=run, port=port, upstream=upstream))
        with (run / "nginx.out").open("wb") as out:
            procs.append(subprocess.Popen(
                [binary, "-e", str(run / "error.log"), "-p", str(run), "-c", str(run / "nginx.conf")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            ))
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return port
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start:\n{(run / 'nginx.out').read_text()}")
            time.sleep(0.05)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)
