"""ASGI lifespan: a graceful stop under servers that speak it (uvicorn, Hypercorn, Granian).

On ``lifespan.shutdown`` the process's hub lets every local reader leave and drops this
process's claims at once, so other processes' counts fall now rather than after reaping.
Daphne sends no lifespan events; there the hub hooks Twisted's shutdown instead
(``presence.twisted_shutdown``). Under uvicorn the connections are closed first
(each consumer unregisters), then ``lifespan.shutdown`` releases what is left and stops the
hub's loops.
"""

from __future__ import annotations

import logging

from presence.hub import running_hub

logger = logging.getLogger(__name__)


async def shutdown_hub() -> None:
    """Shut down the running loop's hub, if this process made one (never create one to stop it)."""
    hub = running_hub()
    if hub is not None:
        await hub.shutdown()


async def lifespan_application(scope, receive, send) -> None:
    """The ``lifespan`` entry of the project's ``ProtocolTypeRouter``."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await shutdown_hub()
            except Exception as exc:
                logger.exception("presence: hub shutdown failed")
                await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
            else:
                await send({"type": "lifespan.shutdown.complete"})
            return
