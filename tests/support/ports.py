"""Free loopback ports for the servers that tests (and ``bench/``) start.

``tests/hosts/conftest.py`` and ``deploy/cluster.py`` keep a copy of ``free_port``: the first runs
in the hosts virtualenv with the repository off ``sys.path``, the second is a script that stands
alone.
"""

from __future__ import annotations

import socket


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(paired: int = 0) -> int:
    """A free loopback port; with ``paired``, one whose port + ``paired`` is free as well (the
    bus port of a Redis Cluster node). Free when probed: another process may take it before
    the caller binds it."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not paired or (port + paired < 65_536 and port_free(port + paired)):
            return port
    raise RuntimeError(f"no free port pair {paired} apart")
