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


# What a client is told stays the same whatever decodes the frame (docs/protocol.md, "Errors and limits").
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "frame is not valid JSON"),
        ("\ufeff" + '{"type": "ping"}', "frame is not valid JSON"),  # a byte-order mark is no JSON
        ('{"type": "ping"} {}', "frame is not valid JSON"),
        ('{"type": "ping",}', "frame is not valid JSON"),
        ("[" * 2000 + "]" * 2000, "frame is not valid JSON"),  # deeper than Python recurses
        ('{"type": "progress", "room": "article:1", "position": NaN}', "frame is not valid JSON"),
        ('{"type": "progress", "room": "article:1", "position": -Infinity}', "frame is not valid JSON"),
        ("[]", "frame must be a JSON object"),
        ('"ping"', "frame must be a JSON object"),
        ('{"type": "progress", "room": "article:1", "position": 1e999}', "'position' must be a number in [0, 1]"),
        ('{"type": "progress", "room": "article:1", "position": 1' + "0" * 400 + "}",
         "'position' must be a number in [0, 1]"),
        ('{"type": "progress", "room": "article:1", "position": true}', "'position' must be a number in [0, 1]"),
        ('{"type": "progress", "room": "article:1", "position": "0.5"}', "'position' must be a number in [0, 1]"),
        ('{"type": "progress", "room": 1, "position": 0.5}', "'room' must be a string"),
        ('{"type": "ping", "ref": "\\ud800"}', "'ref' must be a string of at most 32 characters"),
        ('{"type": "ping", "ref": 7}', "'ref' must be a string of at most 32 characters"),
        ('{"type": "pong"}', "unknown message type"),
        ('{"type": null}', "'type' must be a string"),
    ],
)
def test_refusals_keep_their_messages(text, message):
    with pytest.raises(BadMessage) as refused:
        protocol.parse(text)
    assert refused.value.message == message


@pytest.mark.parametrize(
    ("text", "command"),
    [
        (' \n{"type":"ping","ref":"a"}\t', protocol.Command("ping", "a")),
        ('{"type": "ping", "ref": "a", "ref": "b"}', protocol.Command("ping", "b")),  # the last one counts
        ('{"type": "progress", "room": "article:\\ud800", "position": 0}',
         protocol.Command("progress", room="article:\ud800", position=0.0)),  # the room's lookup refuses it
        ('{"type": "progress", "room": "article:1", "position": -0.0}',
         protocol.Command("progress", room="article:1", position=0.0)),
        ('{"type": "progress", "room": "article:1", "position": 1}',
         protocol.Command("progress", room="article:1", position=1.0)),
        ('{"type": "progress", "room": "article:1", "position": 0.1, "name": "Zo\\u00e9"}',
         protocol.Command("progress", room="article:1", position=0.1, name="Zoé")),
    ],
)
def test_accepted_frames_parse_to_the_same_command(text, command):
    assert protocol.parse(text) == command


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "pong", "server_time": 1_764_000_000_123},
        {"type": "room_state", "room": "article:1", "count": 2, "histogram": [0, 1, 1],
         "readers": [{"reader": "r1", "name": "Zoé ✓ 😀", "position": 0.1}, {"reader": "r2", "position": 1e-07}],
         "you": "r1"},
        {"type": "error", "code": "bad_message", "message": "'position' must be a number in [0, 1]", "ref": "<\"\\>"},
        {"type": "hello", "reader": "r", "online": 0, "server_time": 0, "heartbeat": 20.0},
    ],
)
def test_frames_are_sent_as_compact_json_in_their_key_order(frame):
    text = protocol.dumps(frame)
    assert text == json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
    assert list(json.loads(text)) == list(frame)


def test_a_frame_that_is_not_json_is_never_sent():
    with pytest.raises(ValueError):
        protocol.dumps({"type": "room_state", "position": float("nan")})
