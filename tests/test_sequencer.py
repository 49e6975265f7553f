"""The order the hub's store calls keep (``presence.sequencer``): one key's calls in the order they
were submitted, whatever order their awaits would finish in; other keys side by side; a call once
submitted runs even when whoever waits for it is cancelled."""

from __future__ import annotations

import asyncio

from presence.sequencer import Sequencer


class Gates:
    """Calls that finish when the test says so, in the order they started."""

    def __init__(self):
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Future] = {}

    def call(self, name: str):
        async def run():
            self.started.append(name)
            self.gates[name] = asyncio.get_running_loop().create_future()
            await self.gates[name]
            return name

        return run

    def open(self, name: str) -> None:
        self.gates[name].set_result(None)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_one_keys_calls_run_in_the_order_submitted_and_other_keys_side_by_side():
    sequencer, gates = Sequencer(), Gates()
    claim = sequencer.submit("reader", gates.call("claim"))
    release = sequencer.submit("reader", gates.call("release"))
    other = sequencer.submit("another reader", gates.call("other"))
    await settle()
    assert gates.started == ["claim", "other"]  # the release waits for the claim, not for "other"
    gates.open("other")
    assert await other == "other"
    gates.open("claim")
    assert await claim == "claim"
    await settle()
    assert gates.started == ["claim", "other", "release"]
    gates.open("release")
    assert await release == "release"
    assert sequencer.pending() == []


async def test_a_failed_call_does_not_stop_the_next_and_a_cancelled_waiter_does_not_stop_its_call():
    sequencer, gates = Sequencer(), Gates()

    async def fails():
        raise ConnectionError("store down")

    failed = sequencer.submit("reader", fails)
    release = sequencer.submit("reader", gates.call("release"))
    waiter = asyncio.ensure_future(asyncio.shield(release))
    await settle()
    assert isinstance(failed.exception(), ConnectionError)
    assert gates.started == ["release"]
    waiter.cancel()  # e.g. the consumer that asked was cancelled by a shutdown
    await settle()
    gates.open("release")
    assert await release == "release"
    assert sequencer.pending() == [], "done, and forgotten"
