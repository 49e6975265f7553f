"""Frame parsing is total: any text either becomes a command or a ``bad_message``."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from presence import protocol
from presence.errors import BadMessage

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["join", "leave", "progress", "identify", "ping", "other", 3, None])},
    optional={
        "room": json_values | st.just("article:1"),
        "position": json_values | st.floats(min_value=0, max_value=1),
        "name": json_values,
        "session": json_values | st.just("validsession"),
        "token": json_values,
        "ref": json_values,
    },
)


def parse_or_refuse(text: str):
    try:
        return protocol.parse(text)
    except BadMessage as exc:
        assert exc.code == "bad_message"
        return None


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_command_or_bad_message(text):
    parse_or_refuse(text)


@settings(max_examples=600, deadline=None)
@given(frames)
def test_any_json_frame_is_a_command_or_bad_message(frame):
    command = parse_or_refuse(json.dumps(frame, allow_nan=True))
    if command is None:
        return
    assert command.type in {"join", "leave", "progress", "identify", "ping"}
    if command.ref is not None:
        assert isinstance(command.ref, str) and len(command.ref) <= 32
    if command.type == "progress":
        assert 0.0 <= command.position <= 1.0
        assert command.name is None or (0 < len(command.name) <= 40)
    # Whatever was accepted can be sent back as UTF-8 JSON.
    protocol.dumps({"name": command.name, "ref": command.ref, "room": command.room}).encode("utf-8")


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "ping", "ref": "\\ud800"}',
        '{"type": "progress", "room": "article:1", "position": 0.5, "name": "\\udfff"}',
        '{"type": "progress", "room": "article:1", "position": 1' + "0" * 5000 + "}",
    ],
)
def test_unencodable_or_oversized_input_is_handled(text):
    command = parse_or_refuse(text)
    if command is not None:
        protocol.dumps({"name": command.name, "ref": command.ref}).encode("utf-8")


def test_frame_size_is_counted_in_bytes():
    room = "article:1"
    under = json.dumps({"type": "progress", "room": room, "position": 0.5, "name": "é" * 1000}, ensure_ascii=False)
    assert len(under.encode()) < 4096
    assert protocol.parse(under).name == "é" * 40
    over = json.dumps({"type": "progress", "room": room, "position": 0.5, "name": "é" * 2100}, ensure_ascii=False)
    assert len(over) < 4096 < len(over.encode())
    with pytest.raises(BadMessage):
        protocol.parse(over)
