"""Throwaway Redis servers for the tests: a real three-master Redis Cluster, and plain servers
(channels-redis shards over several). All on free loopback ports, in a temporary directory,
without persistence, stopped by ``stop()``.

Not a test module: the session fixtures in ``tests/conftest.py`` and ``tests/test_cluster.py`` use it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.ports import free_port

# A cluster node also listens on its port + 10000 (the cluster bus).
BUS_OFFSET = 10_000


class ServerMissing(RuntimeError):
    """``redis-server`` (or ``redis-cli`` for a cluster) is not installed."""


def _answers(port: int, command: list[str], expect: str, timeout: float = 1.0) -> bool:
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=timeout, socket_timeout=timeout, decode_responses=True)
    try:
        return expect in str(client.execute_command(*command))
    except Exception:
        return False
    finally:
        client.close()


class Servers:
    """``count`` redis-server processes; ``cluster=True`` joins them into one cluster of masters."""

    def __init__(self, count: int, cluster: bool = False):
        self.server = shutil.which("redis-server")
        self.cli = shutil.which("redis-cli")
        if self.server is None or (cluster and self.cli is None):
            raise ServerMissing("redis-server and redis-cli are needed (apt-get install redis-server)")
        self.cluster = cluster
        self.workdir = Path(tempfile.mkdtemp(prefix="presence-redis-cluster-" if cluster else "presence-redis-"))
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen] = []
        try:
            for _ in range(count):
                self._start_one()
            for port in self.ports:
                self._wait(port, ["PING"], "True", "did not start")
            if cluster:
                self._create_cluster()
        except BaseException:
            self.stop()
            raise

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]

    def _start_one(self) -> None:
        port = free_port(paired=BUS_OFFSET if self.cluster else 0)
        args = [self.server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        args += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            # Every test node is a master: never wait for a failover that cannot come.
            args += ["--cluster-node-timeout", "5000"]
        with open(self.workdir / f"redis-{port}.log", "wb") as log:
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
        self.ports.append(port)

    def _wait(self, port: int, command: list[str], expect: str, what: str, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while not _answers(port, command, expect):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"redis-server on port {port} {what} (logs in {self.workdir})")
            time.sleep(0.05)

    def _create_cluster(self) -> None:
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        done = subprocess.run(
            [self.cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        for port in self.ports:
            self._wait(port, ["CLUSTER", "INFO"], "cluster_state:ok", "never reported cluster_state:ok")

    def restart(self, index: int) -> None:
        """Stop one server and start it again on its port, empty (no persistence); a cluster
        node comes back with its identity and slots (its nodes file) and rejoins."""
        proc, port = self.procs[index], self.ports[index]
        proc.terminate()
        proc.wait(10)
        args = proc.args
        with open(self.workdir / f"redis-{port}.log", "ab") as log:
            self.procs[index] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self._wait(port, ["PING"], "True", "did not restart")
        if self.cluster:
            for other in self.ports:
                self._wait(other, ["CLUSTER", "INFO"], "cluster_state:ok", "never reported cluster_state:ok")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
