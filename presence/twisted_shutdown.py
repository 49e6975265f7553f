"""Under Daphne, the hub's graceful stop before Twisted's reactor stops (Daphne sends no ASGI
lifespan events: ``presence.lifespan`` is for the servers that do).

Daphne 4.2's own SIGTERM path cannot be relied on: ``kill_all_applications`` raises KeyError
(cancelling nothing) while a connection has no application yet, and its ``gather`` lets the
reactor stop as soon as the first cancelled application returns, cutting the others'
unregistering short.
"""

from __future__ import annotations

import asyncio
import logging
import sys

logger = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 10.0  # Daphne's own application_close_timeout


def release_on_reactor_shutdown(hub) -> None:
    """If a Twisted reactor runs this process, shut ``hub`` down before it stops."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not getattr(reactor, "running", False):
        return
    from twisted.internet import defer

    def before_shutdown():
        # At once, before the consumers the server cancels run: they find their connection gone.
        hub.close_all()
        return defer.Deferred.fromFuture(asyncio.ensure_future(shutdown_in_time(hub)))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)


async def shutdown_in_time(hub) -> None:
    """``hub.shutdown()``, bounded: a store or channel-layer call that never returns must not keep
    the process from exiting (it would never stop, SIGTERM notwithstanding)."""
    try:
        await asyncio.wait_for(hub.shutdown(), SHUTDOWN_SECONDS)
    except TimeoutError:
        logger.error("presence hub: shutdown not done after %.0f s (%d sessions ending); exiting anyway",
                     SHUTDOWN_SECONDS, hub.sessions_ending())
    except Exception:
        logger.error("presence hub: shutdown failed; exiting anyway", exc_info=True)
