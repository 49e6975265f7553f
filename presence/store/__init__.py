"""The presence store, resolved lazily from settings; tests may swap it with ``set_store``.

Default: the Redis store when ``PRESENCE_REDIS_URL`` (``REDIS_URL`` in the demo site) is
set, else the in-memory store; with ``PRESENCE_REDIS_CLUSTER`` the URL names any node of a
Redis Cluster. ``PRESENCE_STORE`` names another class by dotted path.
"""

from __future__ import annotations

import os
import socket

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from presence.conf import app_settings
from presence.store.base import Reader, RoomState, Store

__all__ = ["Reader", "RoomState", "Store", "get_store", "process_id", "reset", "set_store"]

_store: Store | None = None
_process_id: str | None = None


def process_id() -> str:
    """A unique id of this server process, stable for its lifetime."""
    global _process_id
    if _process_id is None:
        _process_id = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
    return _process_id


def backend_path() -> str:
    if app_settings.STORE:
        return app_settings.STORE
    if app_settings.REDIS_URL:
        return "presence.store.redis.RedisStore"
    return "presence.store.memory.MemoryStore"


def get_store() -> Store:
    global _store
    if _store is None:
        cls = import_string(backend_path())
        _store = cls(
            process_id(),
            url=app_settings.REDIS_URL,
            prefix=app_settings.REDIS_PREFIX,
            cluster=app_settings.REDIS_CLUSTER,
        )
    return _store


def set_store(store: Store | None) -> None:
    global _store
    _store = store


def reset() -> None:
    """Forget the resolved store (settings changed); the next call resolves it again."""
    set_store(None)


def _forget_store(*, setting: str, **kwargs) -> None:
    if setting.startswith("PRESENCE_"):
        reset()


setting_changed.connect(_forget_store, dispatch_uid="presence.store.settings")
