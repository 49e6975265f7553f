"""A local cluster: N server processes on one Redis behind nginx, on loopback (``make cluster N=3``).

The deployment of ``deploy/README.md`` in miniature, to try it and to test it: migrates the
database, collects static files, starts N uvicorn (or ``--server daphne``) processes on free
loopback ports and Debian's nginx with a generated configuration in a run directory of its own
(no system file is read but ``mime.types``, none is written), prints the URL, and stops
everything on Ctrl-C or SIGTERM.

    .venv/bin/python deploy/cluster.py -n 3 --port 8080 [--server daphne]

``REDIS_URL`` defaults to ``redis://127.0.0.1:6379/0`` and ``TRUSTED_PROXIES`` to ``127.0.0.1`` (the
nginx); every other variable (``DATABASE_URL``, ``DJANGO_SETTINGS_MODULE``, ``ALLOWED_HOSTS``,
``PRESENCE_*``...) passes through to the processes.
"""

from __future__ import annotations

import argparse
import contextlib
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

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
APPLICATION = "presence_site.asgi:application"
MIME_TYPES = Path("/etc/nginx/mime.types")
# How each server is started on a loopback port. No proxy headers: the app reads nginx's
# X-Forwarded-For itself (TRUSTED_PROXIES), which a server's rewrite of the peer would defeat.
SERVERS = {
    "uvicorn": lambda port: [str(BIN / "uvicorn"), APPLICATION, "--host", "127.0.0.1", "--port", str(port),
                             "--no-proxy-headers", "--lifespan", "on"],
    "daphne": lambda port: [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), APPLICATION],
}

# Generated per run; deploy/nginx.conf is the annotated production version of the same proxying.
NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 4096; }}

http {{
    {types}
    default_type application/octet-stream;
    access_log {run}/access.log;
    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}

    # No ip_hash, no sticky sessions: any process serves any client (counts are shared in Redis).
    upstream presence {{
{servers}
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{port};
        server_name localhost 127.0.0.1;

        location /static/ {{
            alias {static}/;
            expires 1h;
        }}

        location / {{
            proxy_pass http://presence;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Longer than the protocol's heartbeat (20 s) and its silence limit (2.5 x 20 s).
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
            # Which process served this request or WebSocket (for trying, and for the tests).
            add_header X-Presence-Upstream $upstream_addr always;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str, any_status: bool = False) -> bool:
    """The URL answers 200, or with ``any_status`` any HTTP response at all (a server is up; its
    ``ALLOWED_HOSTS`` may not name 127.0.0.1)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return any_status
    except OSError:
        return False


def find_nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


class Cluster:
    def __init__(self, count: int, port: int, run: Path, env: dict[str, str], nginx: str, server: str):
        self.count, self.port, self.run, self.env, self.nginx, self.server = count, port, run, env, nginx, server
        self.backends: list[tuple[int, subprocess.Popen, Path]] = []
        self.proxy: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def manage(self, *args: str) -> None:
        command = [sys.executable, "manage.py", *args]
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("collectstatic", "--noinput", "-v", "0")
        for index in range(1, self.count + 1):
            port, log = free_port(), self.run / f"{self.server}-{index}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    SERVERS[self.server](port), cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            self.backends.append((port, proc, log))
        for port, proc, log in self.backends:
            self.wait_for(lambda port=port: answers(f"http://127.0.0.1:{port}/", any_status=True), proc, log,
                          f"{self.server} on port {port}")
        self.start_nginx()

    def start_nginx(self) -> None:
        conf = self.run / "nginx.conf"
        types = f"include {MIME_TYPES};" if MIME_TYPES.exists() else "types { text/css css; text/javascript js; }"
        servers = "\n".join(f"        server 127.0.0.1:{port};" for port, _, _ in self.backends)
        static = ROOT / "staticfiles"
        conf.write_text(NGINX_CONF.format(run=self.run, types=types, servers=servers, port=self.port, static=static))
        log = self.run / "nginx.out"
        with log.open("wb") as out:
            # -e: the error log from the start (not the system's /var/log/nginx); -p: the prefix.
            self.proxy = subprocess.Popen(
                [self.nginx, "-e", str(self.run / "error.log"), "-p", str(self.run), "-c", str(conf)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.wait_for(lambda: answers(self.url), self.proxy, self.run / "error.log", f"nginx on port {self.port}")

    def wait_for(self, ready, proc: subprocess.Popen, log: Path, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                output = log.read_text(errors="replace") if log.exists() else ""
                raise SystemExit(f"{what} did not start; its log ({log}):\n{output}")
            time.sleep(0.1)

    def dead(self) -> str | None:
        for port, proc, log in self.backends:
            if proc.poll() is not None:
                return f"{self.server} on port {port} exited ({proc.returncode}); see {log}"
        if self.proxy is not None and self.proxy.poll() is not None:
            return f"nginx exited ({self.proxy.returncode}); see {self.run / 'error.log'}"
        return None

    def stop(self) -> None:
        """nginx first (clients go), then each server by SIGTERM (a graceful stop releases its readers)."""
        procs = ([self.proxy] if self.proxy else []) + [proc for _, proc, _ in self.backends]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            if proc is self.proxy:
                self._reap(proc)
        for proc in procs:
            self._reap(proc)

    @staticmethod
    def _reap(proc: subprocess.Popen) -> None:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--processes", type=int, default=int(os.environ.get("N", "3")))
    parser.add_argument("--port", type=int, default=8080, help="nginx's loopback port (default 8080)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, nginx.conf)")
    parser.add_argument("--server", choices=list(SERVERS), default="uvicorn",
                        help="the ASGI server (default uvicorn, the recommended one: deploy/README.md)")
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("-n must be at least 1")
    nginx = find_nginx()
    if nginx is None:
        print("nginx is not installed: apt-get install nginx (make cluster does it as root on Debian)", file=sys.stderr)
        return 2

    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    env.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")
    # nginx, on loopback, is the processes' only client: each reader counts by the address it forwards.
    env.setdefault("TRUSTED_PROXIES", "127.0.0.1")
    run = Path(tempfile.mkdtemp(prefix="presence-cluster-"))
    run.chmod(0o755)  # nginx's workers (nobody, when started as root) create their temp files in it
    signal.signal(signal.SIGTERM, _interrupt)  # as Ctrl-C: stop everything, even while starting
    cluster = Cluster(args.processes, args.port, run, env, nginx, args.server)
    try:
        cluster.start()
        print(f"Cluster ready: {cluster.url} (nginx -> {args.processes} {args.server} processes on ports "
              f"{', '.join(str(port) for port, _, _ in cluster.backends)}; Redis {env['REDIS_URL']})", flush=True)
        print(f"Logs and nginx.conf in {run}. Ctrl-C stops everything.", flush=True)
        while (failure := cluster.dead()) is None:
            time.sleep(0.2)
        print(failure, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Stopping the cluster...", flush=True)
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        cluster.stop()
        if not args.keep:
            shutil.rmtree(run, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt

if __name__ == "__main__":
    sys.exit(main())
