"""A loopback TCP proxy that a test controls: the network between a server and its database, or
the front address of two server processes.

Not a test. It runs its own event loop in a thread, so sync tests (Playwright) and async tests
use it alike: ``cut()`` drops every open connection (RST), ``refuse()`` stops listening (new
connections are refused), ``blackhole()`` accepts new connections and never answers, and
``restore()`` forwards again. With several targets, a new connection goes to the first one that
accepts it, as a load balancer sends clients to whichever backend is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading

from tests.support.ports import free_port

FORWARD, REFUSE, BLACKHOLE = "forward", "refuse", "blackhole"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN, as a dying host or a cut cable looks to the peer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """``with TcpProxy(("127.0.0.1", 5432)) as proxy:`` listens on ``proxy.port`` (127.0.0.1)."""

    def __init__(self, *targets: tuple[str, int], port: int | None = None):
        assert targets, "a proxy needs a target"
        self.targets = list(targets)
        self.port = port or free_port()
        self.mode = FORWARD
        self.accepted = 0  # connections accepted, in any mode
        self.forwarded: dict[tuple[str, int], int] = {}  # connections forwarded, per target
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"tcp-proxy-{self.port}", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()  # both ends of every forwarded connection
        self._held: set[asyncio.StreamWriter] = set()  # blackholed clients

    # -- control, from any thread ---------------------------------------------------------
    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> int:
        """Reset every open connection (forwarded or held); returns how many client connections."""
        return self._call(self._cut())

    def refuse(self) -> None:
        """Cut everything and stop listening: new connections get ECONNREFUSED."""
        self._call(self._set_mode(REFUSE))

    def blackhole(self) -> None:
        """Cut everything; new connections are accepted and then never answered."""
        self._call(self._set_mode(BLACKHOLE))

    def restore(self) -> None:
        """Forward new connections again (held ones are reset: their clients gave up or will)."""
        self._call(self._set_mode(FORWARD))

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- in the proxy's loop -----------------------------------------------------------------
    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> int:
        clients = len(self._open) // 2 + len(self._held)
        for writer in list(self._open | self._held):
            _reset(writer)
        self._open.clear()
        self._held.clear()
        return clients

    async def _set_mode(self, mode: str) -> None:
        self.mode = mode
        await self._cut()
        if mode == REFUSE:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
        else:
            await self._listen()

    async def _shutdown(self) -> None:
        await self._cut()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode != FORWARD:
            await self._hold(reader, writer)
            return
        for target in list(self.targets):
            try:
                up_reader, up_writer = await asyncio.open_connection(*target)
            except OSError:
                continue
            self.forwarded[target] = self.forwarded.get(target, 0) + 1
            break
        else:
            _reset(writer)  # no target alive
            return
        self._open.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._open.discard(writer)
            self._open.discard(up_writer)

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._held.add(writer)
        try:
            while await reader.read(65536):
                pass  # swallowed: the client waits for an answer that never comes
        except OSError:
            pass
        finally:
            self._held.discard(writer)
            writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            writer.transport.abort()
