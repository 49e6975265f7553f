"""Store calls in the order the hub decided them, one key at a time.

The hub decides synchronously (a reader's first tab claims it, its last tab releases it) and the
store hears of it later. Awaited side by side, a claim decided after a release could reach the
store first and leave a phantom reader counted forever; the hub used to re-check its state after
each await to catch that, and missed cases (tests/test_interleavings.py found them). Here the
calls of one key (a reader online, a reader in a room) run one after another in the order they
were submitted; calls of different keys run side by side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class Sequencer:
    def __init__(self):
        self._last: dict[Hashable, asyncio.Future] = {}

    def submit(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Run ``call`` once the calls submitted before it under ``key`` are done. It runs even if
        whoever awaits it is cancelled (await it through ``asyncio.shield``): it was decided."""
        before = self._last.get(key)
        task = asyncio.ensure_future(self._after(before, call))
        self._last[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        return task

    def pending(self, of: Callable[[Hashable], bool] = lambda key: True) -> list[asyncio.Future]:
        """The last call of every key (``of`` which) still running (each waits for those before it)."""
        return [call for key, call in self._last.items() if of(key)]

    def _forget(self, key: Hashable, done: asyncio.Future) -> None:
        if self._last.get(key) is done:
            del self._last[key]

    @staticmethod
    async def _after(before: asyncio.Future | None, call: Callable[[], Awaitable[T]]) -> T:
        if before is not None:
            await asyncio.wait([before])  # its outcome is for its own caller
        return await call()
