"""Domain errors that a client caused; each carries the protocol's error code.

The consumer turns any of them into an ``error`` frame (``{"code", "message", "ref"}``).
"""

from __future__ import annotations


class PresenceError(Exception):
    code = "bad_message"

    def __init__(self, message: str, ref: str | None = None):
        super().__init__(message)
        self.message = message
        self.ref = ref


class BadMessage(PresenceError):
    code = "bad_message"


class InvalidRoom(PresenceError):
    """Malformed room name, unknown kind, or no such object."""

    code = "invalid_room"


class NotJoined(PresenceError):
    code = "not_joined"


class TooManyRooms(PresenceError):
    code = "too_many_rooms"


class InvalidToken(PresenceError):
    """A forged, expired, tampered or other-site identity token."""

    code = "invalid_token"


class RateLimited(PresenceError):
    code = "rate_limited"


class Unavailable(PresenceError):
    """The presence store (or, for a never-seen room, the database) could not be reached;
    an extension of the spec's codes."""

    code = "unavailable"
