"""Wire protocol (``docs/protocol.md``): parsing client frames, building server frames.

Parsing is strict and total: any input either becomes a ``Command`` or raises
``BadMessage``, never another exception.
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass
from typing import Any

from presence.conf import app_settings
from presence.errors import BadMessage, PresenceError
from presence.identity import is_valid_session
from presence.store.base import RoomState

# Close codes (protocol: limits and liveness).
CLOSE_TOO_BIG = 1009
CLOSE_FLOOD = 4008
CLOSE_SILENT = 4002
CLOSE_TOO_MANY_READERS = 4029  # extension: `identify` to a reader its address has no room for

REF_MAX_LENGTH = 32
# Live ranking (extension, docs/protocol.md "Live ranking"): rooms one subscription may ask for.
RANKING_MAX_LIMIT = 50
# Control and format characters (spec), plus lone surrogates, which cannot be sent as UTF-8.
DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


@dataclass(slots=True)
class Command:
    """One valid client frame. Only the fields its ``type`` uses are set.

    Not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``, a quarter of
    the cost of parsing a `progress` frame (bench/frame_cost.py). Nothing changes a command after
    ``parse``."""

    type: str
    ref: str | None = None
    room: str | None = None
    position: float | None = None
    name: str | None = None
    session: str | None = None
    token: str | None = None
    limit: int | None = None


def clean_name(value: str) -> str | None:
    """Trim, drop Unicode control/format characters (Cc, Cf), cut to 40 characters."""
    kept = "".join(ch for ch in value if unicodedata.category(ch) not in DROPPED_CATEGORIES)
    kept = kept.strip()[: app_settings.NAME_MAX_LENGTH].strip()
    return kept or None


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject_constant(value: str) -> float:
    raise ValueError(f"{value} is not valid JSON")


# One decoder and one encoder for every frame: ``json.loads`` and ``json.dumps`` with options
# build a new one per call, which cost as much as the decoding of a `progress` frame itself.
_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _string(frame: dict, field: str, ref: str | None) -> str:
    value = frame.get(field)
    if not isinstance(value, str):
        raise BadMessage(f"'{field}' must be a string", ref)
    return value


def parse(text: str | None, *, binary: bool = False) -> Command:
    """Turn one text frame into a Command, or raise BadMessage."""
    if binary or text is None:
        raise BadMessage("binary frames are not accepted")
    limit = app_settings.MAX_FRAME_BYTES
    if len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit:
        raise BadMessage(f"frame is larger than {limit} bytes")
    try:
        frame = _decoder.decode(text)
    except (ValueError, RecursionError):
        raise BadMessage("frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise BadMessage("frame must be a JSON object")

    ref = None
    if "ref" in frame:
        ref = frame["ref"]
        if not isinstance(ref, str) or len(ref) > REF_MAX_LENGTH or not _encodable(ref):
            raise BadMessage(f"'ref' must be a string of at most {REF_MAX_LENGTH} characters")

    kind = frame.get("type")
    if not isinstance(kind, str):
        raise BadMessage("'type' must be a string", ref)
    if kind == "ping":
        return Command("ping", ref)
    if kind in ("join", "leave"):
        return Command(kind, ref, room=_string(frame, "room", ref))
    if kind == "progress":
        room = _string(frame, "room", ref)
        position = frame.get("position")
        if isinstance(position, bool) or not isinstance(position, (int, float)):
            raise BadMessage("'position' must be a number in [0, 1]", ref)
        try:
            position = float(position)
        except OverflowError:
            raise BadMessage("'position' must be a number in [0, 1]", ref) from None
        if not math.isfinite(position) or not 0.0 <= position <= 1.0:
            raise BadMessage("'position' must be a number in [0, 1]", ref)
        position += 0.0  # -0.0 becomes 0.0: stored and sent as 0, never "-0.0"
        name = None
        if frame.get("name") is not None:
            name = clean_name(_string(frame, "name", ref))
        return Command("progress", ref, room=room, position=position, name=name)
    if kind == "identify":
        has_session, has_token = "session" in frame, "token" in frame
        if has_session == has_token:
            raise BadMessage("'identify' takes exactly one of 'session' or 'token'", ref)
        if has_token:
            token = frame["token"]
            if not isinstance(token, str):
                raise BadMessage("'token' must be a string", ref)
            return Command("identify", ref, token=token)
        session = frame["session"]
        if not is_valid_session(session):
            raise BadMessage("'session' must be 8 to 64 characters of [A-Za-z0-9_-]", ref)
        return Command("identify", ref, session=session)
    if kind == "ranking":
        limit = frame.get("limit")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= RANKING_MAX_LIMIT:
            raise BadMessage(f"'limit' must be an integer from 1 to {RANKING_MAX_LIMIT}", ref)
        return Command("ranking", ref, limit=limit)
    raise BadMessage("unknown message type", ref)


def dumps(frame: dict[str, Any]) -> str:
    return _encoder.encode(frame)


def error(exc: PresenceError) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
    if exc.ref is not None:
        frame["ref"] = exc.ref
    return frame


def hello(reader: str, online: int, server_time: int, heartbeat: float) -> dict[str, Any]:
    return {"type": "hello", "reader": reader, "online": online, "server_time": server_time, "heartbeat": heartbeat}


def pong(server_time: int) -> dict[str, Any]:
    return {"type": "pong", "server_time": server_time}


def online(count: int) -> dict[str, Any]:
    return {"type": "online", "count": count}


def room_state(state: RoomState, you: str | None = None) -> dict[str, Any]:
    """A room's state; ``you`` is the receiver's own reader id in that room (protocol 1.1)."""
    frame = {
        "type": "room_state",
        "room": state.room,
        "count": state.count,
        "readers": [r.as_dict() for r in state.readers],
        "histogram": state.histogram,
    }
    if you is not None:
        frame["you"] = you
    return frame


def ranking(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The live ranking (extension): ``[{"room", "count", "title", "url"}]``, most readers first."""
    return {"type": "ranking", "rooms": entries}
