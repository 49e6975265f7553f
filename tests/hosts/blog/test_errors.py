"""A database error that is no outage (here: the app's tables never migrated) is reported once,
loudly, with its cause, and never retried; the live counts go on."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = [pytest.mark.processes, pytest.mark.slow]


async def test_migrations_not_run_are_reported_once_and_not_retried_as_an_outage(scratch_database, host_server,
                                                                               reader):
    url = await asyncio.to_thread(scratch_database, ["loaddata", "articles"], ["migrate", "presence", "zero"])
    server = await asyncio.to_thread(host_server, DATABASE_URL=url)
    clients = []
    for n in range(2):
        clients.append(client := await reader(server.ws, session=f"unmigrated0{n}"))
        await client.send(type="join", room="post:hello-world")
        state = await client.wait_for(lambda f: f["type"] in ("room_state", "error"))
        assert state["type"] == "room_state" and state["count"] == n + 1  # live presence is fine
    await asyncio.sleep(6)  # longer than PRESENCE_MIN_SESSION_SECONDS
    for client in clients:  # each leaving reader's session fails to be written
        await client.close()
    await asyncio.sleep(4)  # what the recorder does next: retries would come after 1 s, then 2 more

    log = server.output
    reports = [line for line in log.splitlines() if "a reading session could not be written" in line]
    assert len(reports) == 1, log
    assert "not retried" in reports[0] and "`migrate` not run" in reports[0]
    cause = log.split(reports[0], 1)[1]  # the database's own words follow, then the traceback
    assert "presence_readingsession" in reports[0] + cause and "Traceback" in cause
    assert "retrying" not in log and "held back" not in log and "database unavailable" not in log, log
