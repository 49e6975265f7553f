"""Hostile input: Hypothesis throws over 10,000 frames at one connection while an
honest reader in the same room keeps reading.

Each Hypothesis example is a batch of frames sent without waiting for replies, then a ``ping``;
every frame must get exactly one answer, in order: an ``error`` with a code of the protocol's
set (or the legitimate reply of a frame that happened to be valid: ``pong``, ``hello``). The
attacker joins nothing, so no frame of it may change the store, and the honest reader must see
nothing at all. The rate limit is lifted for the storm (``PRESENCE_RATE=1e9,
PRESENCE_BURST=10**9``): floods are ``test_floods.py``'s subject. Each example runs on its own
event loop with a fresh hub (injected clock, no tick loop, no channel layer).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import Counter

import pytest
from channels.testing import WebsocketCommunicator
from django.core import signing
from django.test import Client, override_settings
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from presence import identity, rooms
from presence.hub import Hub, set_hub
from presence.routing import websocket_application
from tests.support.factories import make_store


class FakeClock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CODES = {"bad_message", "invalid_room", "not_joined", "too_many_rooms", "invalid_token", "rate_limited", "unavailable"}
EXAMPLES, BATCH = 50, 200  # 10,000 hostile frames per backend
GOOD_SESSION = "honestreader01"
BIG = 1 << 20

# -- strategies -------------------------------------------------------------------------------------

HOSTILE_TEXT = st.one_of(
    st.text(max_size=80),
    st.sampled_from([
        "", " ", "\x00", "\ufeff", "\u202e", "\u200b" * 50, "\U0001f600" * 41, "e\u0301" * 30, "A" * 4000,
        "<script>alert(1)</script>", "'; DROP TABLE presence_readingsession; --", "../../etc/passwd",
        "user:1", "anon:" + GOOD_SESSION, "conn:0", "%00", "\\u0000",
    ]),
)
HUGE_NUMBERS = st.sampled_from([10**30, -(10**30), 2**63, 2**64 + 1, 1e308, -1e308, 5e-324, -0.0, 1.0000001])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | HOSTILE_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
# Rooms that name nothing (the attacker never gets into a room).
ROOMS = st.one_of(
    JSON_VALUES,
    st.sampled_from([
        "article:0", "article:-1", "article:99999999", "article:" + "9" * 64, "article:" + "9" * 65,
        "article:1 OR 1=1", "article:1;", "Article:1", "article:\uff11", "article:1\x00", "article:", ":1",
        "nosuch:1", "article:1:1", "article: 1", "article:x", "article:1e3", "article:0x1", "article:\u0661",
    ]),
    st.from_regex(r"\A[a-z][a-z0-9_]{0,19}:[A-Za-z0-9_-]{1,64}\Z").filter(lambda r: not r.startswith("article:")),
    st.from_regex(r"\Aarticle:[A-Za-z_-][A-Za-z0-9_-]{0,63}\Z"),
)
SESSIONS = st.one_of(JSON_VALUES, st.from_regex(r"\A[A-Za-z0-9_-]{1,7}\Z"), st.from_regex(r"\A[A-Za-z0-9_-]{65,70}\Z"),
                     st.from_regex(r"\A[A-Za-z0-9_-]{8,64}\Z").filter(lambda s: s != GOOD_SESSION))
REFS = st.one_of(st.text(max_size=32), st.text(max_size=32), st.text(max_size=32),  # mostly valid refs
                 st.none(), st.text(min_size=33, max_size=40), st.integers(), st.just("\ud800"))


def _obj(**fields):
    return st.fixed_dictionaries(fields, optional={"ref": REFS})


FRAMES_AS_OBJECTS = st.one_of(
    _obj(type=st.sampled_from(["join", "leave"]), room=ROOMS),
    _obj(type=st.just("progress"), room=ROOMS, position=st.one_of(JSON_VALUES, HUGE_NUMBERS), name=JSON_VALUES),
    _obj(type=st.just("progress"), room=ROOMS, position=st.floats(0, 1), name=HOSTILE_TEXT),
    _obj(type=st.just("identify"), session=SESSIONS),
    _obj(type=st.just("identify"), token=st.one_of(JSON_VALUES, st.sampled_from(["TOKENS"]))),
    _obj(type=st.just("identify"), session=SESSIONS, token=HOSTILE_TEXT),
    _obj(type=st.just("identify")),
    _obj(type=st.one_of(JSON_VALUES, st.sampled_from(["PING", "hello", "room", "error", "ping "]))),
    st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5),
    JSON_VALUES,
)

RAW_TEXTS = st.one_of(
    st.text(max_size=200),  # mostly not JSON
    st.sampled_from([
        "", "{", "}", "[", "null", "true", "0", '""', "{}", "[]", '{"type":"ping"', '{"type":"ping"}}',
        '{"type":"ping","ref":"\\ud800"}', '{"type":"join","room":"\\ud800"}', '{"type":"join","room":"\\udfff:1"}',
        '{"type":"progress","room":"article:1","position":NaN}', '{"type":"progress","room":"x","position":Infinity}',
        '{"type":"progress","room":"x","position":-Infinity}', '{"type":"progress","room":"x","position":1e999}',
        '{"type":"progress","room":"x","position":' + "9" * 5000 + "}", '{"type":"ping","a":' + "1" * 4000 + "}",
        '{"type":"progress","room":"x","position":0.5,"name":"\\ud83d"}', '{"type":"ping","type":"join"}',
        '{"type":"\\u0070ing"}', "\ufeff{\"type\":\"ping\"}", '{"type":"ping"}\x00', "\x00" * 100,
    ]),
    st.integers(1, 2040).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 2000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.integers(10, 10**6).map(lambda depth: "[" * depth),
    st.sampled_from([BIG, 4097, 4096 * 4, BIG * 2]).map(lambda size: '{"type":"ping","pad":"' + "x" * size + '"}'),
)

OBJECTS = FRAMES_AS_OBJECTS.map(lambda obj: ("obj", obj))
FRAMES = st.one_of(
    OBJECTS, OBJECTS, OBJECTS,  # valid types with hostile values, more often than raw garbage
    RAW_TEXTS.map(lambda text: ("text", text)),
    st.one_of(st.binary(max_size=64), st.just(b"\xff" * BIG), st.just(b'{"type":"ping"}')).map(lambda b: ("bytes", b)),
)


# -- the storm ---------------------------------------------------------------------------------------


class ErrorRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def encode(kind, value, tokens):
    if kind == "bytes":
        return None, value or b"\x00"
    if kind == "obj":
        if isinstance(value, dict) and value.get("token") == "TOKENS":
            value = {**value, "token": tokens[len(json.dumps(value)) % len(tokens)]}
        text = json.dumps(value)  # allow_nan is moot: the strategies make no NaN
    else:
        text = value
    return text, None


def valid_ref(frame_text: str | None):
    try:
        obj = json.loads(frame_text)
    except Exception:  # noqa: BLE001 - anything unparsable has no ref
        return None
    if isinstance(obj, dict) and isinstance(obj.get("ref"), str) and len(obj["ref"]) <= 32:
        try:
            obj["ref"].encode()
        except UnicodeEncodeError:
            return None
        return obj["ref"]
    return None


async def open_client(app, session):
    client = WebsocketCommunicator(app, f"/ws/presence/?session={session}", headers=[(b"origin", b"http://localhost")])
    connected, _ = await client.connect()
    assert connected
    hello = await client.receive_json_from()
    assert hello["type"] == "hello"
    return client


async def storm(store, room, batch, tokens, seen):
    clock = FakeClock()
    hub = Hub(store=store, layer_alias="presence-consumers-use-the-hub", autotick=False, clock=clock)
    set_hub(hub)
    app = websocket_application()
    good = await open_client(app, GOOD_SESSION)
    await good.send_json_to({"type": "join", "room": room})
    assert (await good.receive_json_from())["type"] == "room_state"
    await good.send_json_to({"type": "progress", "room": room, "position": 0.5, "name": "Honest"})
    await hub.tick()
    assert (await good.receive_json_from())["type"] == "room"
    attacker = await open_client(app, "attacker0001")
    await hub.tick()
    await hub.tick()  # online 2, held for two readings
    while not await good.receive_nothing(timeout=0.01):
        await good.receive_output()  # the attacker's arrival (online 2)
    before = (await store.room_state(room), await store.ranking(100), await store.online())

    frames = [encode(kind, value, tokens) for kind, value in batch]
    for text, data in frames:
        if text == "":  # send_to() refuses an empty text frame; a server passes it on
            await attacker.send_input({"type": "websocket.receive", "text": ""})
        else:
            await attacker.send_to(text_data=text, bytes_data=data)
    await attacker.send_json_to({"type": "ping", "ref": "end"})
    for text, data in frames:
        reply = await attacker.receive_output(timeout=10)
        assert reply["type"] == "websocket.send", (text, data, reply)
        frame = json.loads(reply["text"])
        seen[frame.get("code", frame["type"])] += 1
        if frame["type"] == "error":
            assert frame["code"] in CODES, (text, frame)
            assert isinstance(frame["message"], str)
            ref = valid_ref(text) if text is not None else None
            if "ref" in frame:  # only ever a valid ref, echoed as sent
                assert frame["ref"] == ref is not None, (text, frame)
            elif frame["code"] != "bad_message":
                assert ref is None, (text, frame)
            if data is not None or text is None or len(text.encode("utf-8", "surrogatepass")) > 4096:
                assert frame["code"] == "bad_message", (text, frame)
        else:  # a frame that happened to be valid
            obj = json.loads(text)
            assert (obj["type"], frame["type"]) in {("ping", "pong"), ("identify", "hello")}, (text, frame)
    assert await attacker.receive_json_from(timeout=10) == {"type": "pong", "server_time": int(clock() * 1000)}
    seen["frames"] += len(frames)

    assert (await store.room_state(room), await store.ranking(100), await store.online()) == before
    await hub.tick()
    assert await good.receive_nothing(timeout=0.01)  # the honest reader saw nothing of it
    await good.send_json_to({"type": "join", "room": room})
    state = await good.receive_json_from()
    assert (state["count"], state["histogram"]) == (before[0].count, before[0].histogram)
    assert [r["name"] for r in state["readers"]] == ["Honest"]
    assert not attacker.future.done() and not good.future.done()  # neither consumer crashed
    for client in (attacker, good):
        await client.disconnect()
    await hub.stop()
    set_hub(None)
    await store.release_all()
    await store.close()


@functools.cache
def hostile_batches() -> tuple[list, ...]:
    """The storm's batches of frames, drawn once (derandomized, so the same for every backend) and
    replayed on each backend: drawing them is most of this test's time. A failing frame is named in
    the assertion's message (no shrinking needed)."""
    batches = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(st.lists(FRAMES, min_size=BATCH, max_size=BATCH))
    def draw(batch):
        batches.append(batch)

    draw()
    return tuple(batches)


@pytest.mark.parametrize("backend", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_hostile_frames_are_refused_and_disturb_nobody(backend, request, django_user_model):
    from blog.models import Article

    article = Article.objects.create(title="Fuzzed", slug="fuzzed", body="Words.")
    room = f"article:{article.pk}"
    user = django_user_model.objects.create_user("victim", "victim@example.com", "pw")
    browser = Client()
    browser.force_login(user)
    good_token = identity.make_token(user, browser.session)
    with override_settings(SECRET_KEY="another-site-" + "k" * 50):
        other_site = identity.make_token(user, browser.session)
    tokens = [
        good_token[:-1] + ("A" if good_token[-1] != "A" else "B"), other_site,
        signing.dumps({"u": str(user.pk)}, salt="not.presence"), signing.dumps({"u": 1}, salt="presence.identity"),
        signing.dumps(["user:1"], salt="presence.identity"), "user:1", good_token.split(":")[0],
    ]
    def new_store():
        return make_store(backend, request, "fuzz-proc")

    errors = ErrorRecords()
    watched = [logging.getLogger(), logging.getLogger("presence"), logging.getLogger("django")]
    for logger in watched:
        logger.addHandler(errors)
    seen = Counter()  # frames sent, and answers by code (or type)

    try:
        with override_settings(PRESENCE_RATE=1e9, PRESENCE_BURST=10**9):
            for batch in hostile_batches():
                rooms.cache_clear()
                asyncio.run(storm(new_store(), room, batch, tokens, seen))
    finally:
        for logger in watched:
            logger.removeHandler(errors)
    assert seen["frames"] >= EXAMPLES * BATCH == 10_000
    # The storm reached every kind of refusal, and some frames were (harmlessly) valid.
    assert all(seen[code] for code in ("bad_message", "invalid_room", "not_joined", "invalid_token", "pong")), seen
    assert seen["rate_limited"] == seen["unavailable"] == 0, seen
    print(f"\nfuzz ({backend}): {dict(seen)}")
    assert errors.records == []


@pytest.mark.parametrize("name", ["article:{pk}\n"])
async def test_a_trailing_newline_does_not_make_another_room(ws, hub, article, name):
    client = await ws(session="newlineroom1")
    await client.receive_json_from()
    await client.send_json_to({"type": "join", "room": name.format(pk=article.pk)})
    assert (await client.receive_json_from())["code"] == "invalid_room"
    assert await hub.store.ranking(10) == []


async def test_a_session_with_a_trailing_newline_is_malformed(ws):
    client = await ws(session="newlinesess1")
    await client.receive_json_from()
    await client.send_json_to({"type": "identify", "session": "newlinesess2\n"})
    assert (await client.receive_json_from())["code"] == "bad_message"
