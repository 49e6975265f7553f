"""Hubs of several server processes in one event loop (the ``hubs`` fixture, tests/conftest.py):
what a connection of theirs receives, and the steps that move frames between them; and a bare
connection (``tab``) for the pure modules' tests."""

from __future__ import annotations

import asyncio
import json

from presence.connections import Connection
from presence.hub import Hub
from presence.ratelimit import FrameLimiter


class Client:
    """What the hub sees of a WebSocket: a send and a close, recorded."""

    def __init__(self):
        self.frames: list[dict] = []
        self.closed: int | None = None

    async def send(self, text: str) -> None:
        self.frames.append(json.loads(text))

    async def close(self, code: int) -> None:
        self.closed = code

    def take(self, kind: str) -> list[dict]:
        found = [f for f in self.frames if f["type"] == kind]
        self.frames = [f for f in self.frames if f["type"] != kind]
        return found


async def deliver() -> None:
    """Let the hubs' channel-layer receive loops run (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def connect(hub: Hub, who: str) -> tuple[Client, object]:
    client = Client()
    conn, _ = await hub.register(who, client.send, client.close)
    return client, conn


async def tick_all(hubs) -> None:
    for hub in hubs:
        await hub.tick()
    await deliver()
    for hub in hubs:
        await hub.tick()


async def _ignore(*args) -> None:
    return None


def tab(who: str) -> Connection:
    """A connection of reader ``who`` that sends nowhere: for modules that only keep state."""
    return Connection(f"anon:{who}", _ignore, _ignore, 0.0, FrameLimiter(10, 10, 5))
