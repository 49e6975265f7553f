"""The REST API: shapes, live numbers from the store (both backends), permissions,
privacy, constant store cost, throttling, validation, the schema, and a schemathesis run.

Sync tests: the views reach the async store through ``async_to_sync``, as in production.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

import presence.store
from presence import identity, live
from presence.conf import app_settings
from presence.models import OnlinePeak, ReadingSession
from presence.store.base import HISTOGRAM_BUCKETS, Reader, Store
from tests.support.factories import make_store

# Room resolution goes through channels' database_sync_to_async, which closes connections
# left in a transaction: only transactional tests see the real request path.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_caches")]

API = "/api/presence/"
READER_KEYS = {"id", "name", "position", "joined_at", "updated_at"}
STAFF_URLS = [f"{API}history/", f"{API}history/ranking/", f"{API}peaks/"]


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request):
    """The store the API reads, on both backends (installed with ``set_store``)."""
    made = make_store(request.param, request)
    presence.store.set_store(made)
    yield made
    presence.store.reset()


@pytest.fixture
def blog_articles(db):
    from blog.models import Article

    return [
        Article.objects.create(title=f"API article {n}", slug=f"api-article-{n}", body="Words. " * 20) for n in range(6)
    ]


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("zelda_q", "zelda.q@example.org", "pw")


@pytest.fixture
def user_client(user) -> APIClient:
    signed_in = APIClient()
    signed_in.force_login(user)
    return signed_in


@pytest.fixture
def staff_client(django_user_model) -> APIClient:
    staff = django_user_model.objects.create_user("editor", "editor@example.com", "pw", is_staff=True)
    signed_in = APIClient()
    signed_in.force_login(staff)
    return signed_in


def room_of(article) -> str:
    return f"article:{article.pk}"


def put(store: Store, room: str, reader_id: str, position: float | None = None, at: int = 1_000, name=None) -> None:
    """A reader in a room, as a hub would store it."""
    reader = Reader(id=reader_id, name=name, position=position, joined_at=at, updated_at=at)
    async_to_sync(store.join)(room, reader)


def online(store: Store, *reader_ids: str) -> None:
    for reader_id in reader_ids:
        async_to_sync(store.claim_online)(reader_id)


def counting(inner: Store) -> Store:
    """A proxy of ``inner`` that counts calls per store method in ``.calls``."""

    def forward(name: str):
        async def call(self, *args, **kwargs):
            self.calls[name] += 1
            return await getattr(inner, name)(*args, **kwargs)

        return call

    cls = type("CountingStore", (Store,), {name: forward(name) for name in Store.__abstractmethods__})
    proxy = cls(inner.proc)
    proxy.calls = Counter()
    return proxy


def session(room: str, minutes_ago: float, **fields) -> ReadingSession:
    started = timezone.now() - timedelta(minutes=minutes_ago)
    values = {
        "room": room,
        "object_id": room.split(":", 1)[1],
        "title": f"Title of {room}",
        "reader_id": "r" * 24,
        "started_at": started,
        "ended_at": started + timedelta(seconds=90),
        "duration_seconds": 90.0,
        "furthest_position": 0.5,
        "last_position": 0.4,
        "end_reason": "closed",
        "process": "test-proc",
    }
    values.update(fields)
    return ReadingSession.objects.create(**values)


# -- live numbers (public) -------------------------------------------------------------------


def test_online_is_the_stores_count_of_distinct_readers(client, store):
    assert client.get(f"{API}online/").json() == {"online": 0}
    online(store, "r1", "r2", "r2", "r3")
    response = client.get(f"{API}online/")
    assert response.status_code == 200
    assert response.json() == {"online": 3}


def test_rooms_ranks_rooms_with_readers_with_titles_and_urls(client, store, blog_articles):
    a, b, c = blog_articles[:3]
    for n in range(3):
        put(store, room_of(a), f"a{n}")
    put(store, room_of(b), "b0")
    put(store, room_of(c), "c0")
    put(store, room_of(c), "c1")

    response = client.get(f"{API}rooms/")
    assert response.status_code == 200
    assert response.json() == [
        {"room": room_of(a), "count": 3, "title": a.title, "url": a.get_absolute_url()},
        {"room": room_of(c), "count": 2, "title": c.title, "url": c.get_absolute_url()},
        {"room": room_of(b), "count": 1, "title": b.title, "url": b.get_absolute_url()},
    ]
    assert [r["room"] for r in client.get(f"{API}rooms/?limit=2").json()] == [room_of(a), room_of(c)]


def test_rooms_is_empty_without_readers(client, store):
    assert client.get(f"{API}rooms/").json() == []


def test_ranking_leaves_out_rooms_whose_article_was_deleted(store, blog_articles):
    kept, deleted = blog_articles[:2]
    put(store, room_of(kept), "k0")
    put(store, room_of(deleted), "d0")
    put(store, room_of(deleted), "d1")
    deleted.delete()
    assert [r["room"] for r in live.live_ranking(10)] == [room_of(kept)]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", "1.5"])
def test_rooms_limit_out_of_range_is_400_with_a_message(client, store, limit):
    response = client.get(f"{API}rooms/", {"limit": limit})
    assert response.status_code == 400
    assert response.json()["limit"][0]


def test_room_detail_is_the_room_state(client, store, blog_articles):
    room = room_of(blog_articles[0])
    put(store, room, "r1", position=None, at=1_000, name="Ada")
    put(store, room, "r2", position=0.5, at=2_000)
    async_to_sync(store.update)([(room, Reader("r2", "Bo", 1.0, 2_000, 3_000))])

    response = client.get(f"{API}rooms/{room}/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"room", "count", "readers", "histogram"}
    assert body["room"] == room
    assert body["count"] == 2
    assert body["readers"] == [
        {"id": "r2", "name": "Bo", "position": 1.0, "joined_at": 2_000, "updated_at": 3_000},
        {"id": "r1", "name": "Ada", "position": None, "joined_at": 1_000, "updated_at": 1_000},
    ]
    expected = [0] * HISTOGRAM_BUCKETS
    expected[0] = expected[HISTOGRAM_BUCKETS - 1] = 1
    assert body["histogram"] == expected


def test_room_detail_of_an_article_nobody_reads(client, store, blog_articles):
    room = room_of(blog_articles[0])
    body = client.get(f"{API}rooms/{room}/").json()
    assert body == {"room": room, "count": 0, "readers": [], "histogram": [0] * HISTOGRAM_BUCKETS}


def test_room_detail_caps_readers_but_counts_everyone(client, blog_articles, request):
    with override_settings(PRESENCE_ROOM_STATE_READERS=2):
        store = make_store("memory", request)
        presence.store.set_store(store)
        room = room_of(blog_articles[0])
        for n in range(5):
            put(store, room, f"r{n}", position=0.3, at=1_000 + n)
        body = client.get(f"{API}rooms/{room}/").json()
    assert body["count"] == 5
    assert [r["id"] for r in body["readers"]] == ["r4", "r3"]
    assert sum(body["histogram"]) == 5


@pytest.mark.parametrize(
    "room", ["article:999999", "article:nope", "video:1", "article", "ARTICLE:1", "a:b:c", "x" * 200]
)
def test_unknown_or_malformed_room_is_404_with_a_message(client, store, blog_articles, room):
    response = client.get(f"{API}rooms/{room}/")
    assert response.status_code == 404
    assert response.json()["detail"]


def test_public_responses_carry_no_identities_session_ids_or_emails(client, store, blog_articles, user):
    secret_session = "s3cretSessionId-0042"
    identities = [identity.for_user(user.pk), identity.for_session(secret_session)]
    room = room_of(blog_articles[0])
    for who in identities:
        reader_id = identity.reader_id(who)
        online(store, reader_id)
        put(store, room, reader_id, position=0.2)

    texts = [client.get(url).content.decode() for url in (f"{API}online/", f"{API}rooms/", f"{API}rooms/{room}/")]
    detail = json.loads(texts[2])
    assert {r["id"] for r in detail["readers"]} == {identity.reader_id(who) for who in identities}
    for text in texts:
        for secret in [*identities, secret_session, user.email, user.username, "anon:", "user:"]:
            assert secret not in text
    for reader in detail["readers"]:
        assert set(reader) == READER_KEYS


# -- constant store cost ---------------------------------------------------------------------


@pytest.fixture
def many_articles(db):
    from blog.models import Article

    return Article.objects.bulk_create(Article(title=f"Many {n}", slug=f"many-{n}", body="Words.") for n in range(50))


def test_public_endpoints_make_a_constant_number_of_store_calls(
    client, store, many_articles, django_assert_num_queries
):
    def calls_for(n_rooms: int, url: str) -> Counter:
        proxy = counting(store)
        presence.store.set_store(proxy)
        for i, article in enumerate(many_articles[:n_rooms]):
            online(store, f"reader-{n_rooms}-{i}")
            for k in range(i % 3 + 1):
                put(store, room_of(article), f"reader-{n_rooms}-{i}-{k}")
        response = client.get(url)
        assert response.status_code == 200
        return proxy.calls

    few = calls_for(5, f"{API}rooms/?limit=100")
    many = calls_for(50, f"{API}rooms/?limit=100")
    assert few == many == Counter({"ranking": 1})
    assert len(client.get(f"{API}rooms/?limit=100").json()) == 50

    # Titles come from the room cache: a warm ranking asks the database nothing.
    with django_assert_num_queries(0):
        client.get(f"{API}rooms/?limit=100")
    assert calls_for(50, f"{API}online/") == Counter({"online": 1})
    assert calls_for(50, f"{API}rooms/{room_of(many_articles[0])}/") == Counter({"room_state": 1})


def test_store_outage_is_503(client, blog_articles):
    from presence.store.redis import RedisStore

    presence.store.set_store(RedisStore("api-test", url="redis://127.0.0.1:1/0", prefix="presence-test-down"))
    for url in (f"{API}online/", f"{API}rooms/", f"{API}rooms/{room_of(blog_articles[0])}/"):
        response = client.get(url)
        assert response.status_code == 503
        assert response.json()["detail"]


# -- token -----------------------------------------------------------------------------------


def test_token_is_refused_to_anonymous(client):
    response = client.get(f"{API}token/")
    assert response.status_code == 403
    assert response.json()["detail"]


def test_token_takes_no_password(client, user):
    """The token is for a signed-in page's session: HTTP basic credentials are never checked,
    so the endpoint is no password oracle (200 guesses: no login attempt at all, all 403)."""
    import base64

    from django.contrib.auth.signals import user_login_failed

    attempts = []
    user_login_failed.connect(receiver := lambda **kwargs: attempts.append(kwargs), weak=False)
    try:
        codes = Counter(
            client.get(f"{API}token/", HTTP_AUTHORIZATION="Basic " + base64.b64encode(
                f"{user.username}:guess{n}".encode()).decode()).status_code
            for n in range(200)
        )
    finally:
        user_login_failed.disconnect(receiver)
    assert codes == Counter({403: 200})
    assert attempts == []
    right = "Basic " + base64.b64encode(f"{user.username}:pw".encode()).decode()
    assert client.get(f"{API}token/", HTTP_AUTHORIZATION=right).status_code == 403


def test_token_vouches_for_the_signed_in_user(user_client, user):
    response = user_client.get(f"{API}token/")
    assert response.status_code == 200
    assert set(response.json()) == {"token"}
    assert async_to_sync(identity.identity_from_token)(response.json()["token"]) == identity.for_user(user.pk)
    assert "no-store" in response["Cache-Control"]


# -- staff endpoints -------------------------------------------------------------------------


@pytest.mark.parametrize("url", STAFF_URLS)
def test_staff_endpoints_refuse_anonymous_and_non_staff(client, user_client, url):
    assert client.get(url).status_code == 403
    assert user_client.get(url).status_code == 403


@pytest.mark.parametrize("url", STAFF_URLS)
def test_staff_endpoints_allow_staff(staff_client, url):
    assert staff_client.get(url).status_code == 200


def test_history_fields_and_order(staff_client, user):
    older = session("article:1", 30, user=user, name="Ada")
    newer = session("article:2", 10, reader_id="b" * 24, end_reason="", ended_at=None)
    body = staff_client.get(f"{API}history/").json()
    assert body["count"] == 2
    assert [row["id"] for row in body["results"]] == [newer.pk, older.pk]
    row = body["results"][1]
    assert set(row) == {
        "id", "room", "title", "reader_id", "user", "username", "name", "started_at", "ended_at",
        "duration_seconds", "furthest_position", "last_position", "end_reason",
    }  # fmt: skip
    assert row["user"] == user.pk
    assert row["username"] == user.username
    assert row["room"] == "article:1"
    assert row["duration_seconds"] == 90.0
    anonymous = body["results"][0]
    assert anonymous["user"] is None
    assert anonymous["username"] is None
    assert anonymous["ended_at"] is None


def test_history_is_paginated_by_50(staff_client):
    for n in range(55):
        session("article:1", n, reader_id=f"{n:024d}")
    first = staff_client.get(f"{API}history/").json()
    assert first["count"] == 55
    assert len(first["results"]) == 50
    assert first["next"]
    second = staff_client.get(first["next"]).json()
    assert len(second["results"]) == 5
    assert staff_client.get(f"{API}history/?page=9").status_code == 404


def test_history_filters(staff_client, user):
    a_user = session("article:1", 120, user=user)
    a_anon = session("article:1", 60)
    b_user = session("article:2", 5, user=user)

    def ids(**params):
        response = staff_client.get(f"{API}history/", params)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids(room="article:1") == {a_user.pk, a_anon.pk}
    assert ids(user=user.pk) == {a_user.pk, b_user.pk}
    assert ids(room="article:1", user=user.pk) == {a_user.pk}
    hour_ago = (timezone.now() - timedelta(minutes=90)).isoformat()
    ten_ago = (timezone.now() - timedelta(minutes=10)).isoformat()
    assert ids(since=hour_ago) == {a_anon.pk, b_user.pk}
    assert ids(until=ten_ago) == {a_user.pk, a_anon.pk}
    assert ids(since=hour_ago, until=ten_ago) == {a_anon.pk}
    assert ids(room="article:3") == set()


@pytest.mark.parametrize(
    "params, field",
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-01T00:00:00Z"}, "until"),
        ({"since": "2024-02-02T00:00:00Z", "until": "2024-02-01T00:00:00Z"}, "until"),
        ({"user": "bob"}, "user"),
        ({"user": "0"}, "user"),
        ({"room": "x" * 101}, "room"),
    ],
)
def test_history_bad_filters_are_400_with_a_message(staff_client, params, field):
    response = staff_client.get(f"{API}history/", params)
    assert response.status_code == 400
    assert response.json()[field][0]


def test_article_ranking_reports_the_period(staff_client, blog_articles):
    a, b = blog_articles[:2]
    for n in range(3):
        session(room_of(a), 60 + n, reader_id=f"a{n % 2:023d}", duration_seconds=60.0 * (n + 1),
                furthest_position=1.0 if n else 0.05, title=a.title)  # fmt: skip
    session(room_of(b), 30, title=b.title)
    session(room_of(b), 8 * 24 * 60, title=b.title)  # before the default 7 days

    response = staff_client.get(f"{API}history/ranking/")
    assert response.status_code == 200
    body = response.json()
    assert [row["room"] for row in body] == [room_of(a), room_of(b)]
    top = body[0]
    assert top == {
        "room": room_of(a),
        "title": a.title,
        "url": a.get_absolute_url(),
        "reads": 3,
        "unique_readers": 2,
        "median_seconds": 120.0,
        "completion_rate": pytest.approx(2 / 3),
        "depth": [1, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    }
    assert body[1]["reads"] == 1

    week_ago = timezone.now() - timedelta(days=9)
    params = {"since": week_ago.isoformat(), "until": (week_ago + timedelta(days=2)).isoformat()}
    body = staff_client.get(f"{API}history/ranking/", params).json()
    assert [(row["room"], row["reads"]) for row in body] == [(room_of(b), 1)]
    assert len(staff_client.get(f"{API}history/ranking/", {"limit": 1}).json()) == 1


@pytest.mark.parametrize(
    "params, field",
    [
        ({"since": "last week"}, "since"),
        ({"until": "2024-02-30T00:00:00Z"}, "until"),
        ({"since": "2024-02-02T00:00:00Z", "until": "2024-02-01T00:00:00Z"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "many"}, "limit"),
    ],
)
def test_article_ranking_bad_parameters_are_400_with_a_message(staff_client, params, field):
    response = staff_client.get(f"{API}history/ranking/", params)
    assert response.status_code == 400
    assert response.json()[field][0]


def test_peaks_newest_first_within_days(staff_client):
    today = timezone.now().astimezone(UTC).date()
    for days_ago, count in [(0, 5), (1, 9), (40, 30)]:
        day = today - timedelta(days=days_ago)
        OnlinePeak.objects.create(date=day, count=count, at=datetime(day.year, day.month, day.day, 12, tzinfo=UTC))

    body = staff_client.get(f"{API}peaks/").json()
    assert [row["count"] for row in body] == [5, 9]
    assert body[0] == {"date": today.isoformat(), "count": 5, "at": f"{today.isoformat()}T12:00:00Z"}
    assert [row["count"] for row in staff_client.get(f"{API}peaks/", {"days": 366}).json()] == [5, 9, 30]
    assert [row["count"] for row in staff_client.get(f"{API}peaks/", {"days": 1}).json()] == [5]


@pytest.mark.parametrize("days", ["0", "367", "-3", "week"])
def test_peaks_bad_days_is_400_with_a_message(staff_client, days):
    response = staff_client.get(f"{API}peaks/", {"days": days})
    assert response.status_code == 400
    assert response.json()["days"][0]


# -- throttling ------------------------------------------------------------------------------


def test_throttle_rate_defaults_to_120_a_minute():
    assert app_settings.API_THROTTLE_RATE == "120/min"


def test_anonymous_clients_are_throttled_over_the_public_endpoints(client, user_client, blog_articles, request):
    with override_settings(PRESENCE_API_THROTTLE_RATE="3/min"):
        presence.store.set_store(make_store("memory", request))  # overriding settings reset it
        urls = [f"{API}online/", f"{API}rooms/", f"{API}rooms/{room_of(blog_articles[0])}/"]
        assert [client.get(url).status_code for url in urls] == [200, 200, 200]
        response = client.get(f"{API}online/")
        assert response.status_code == 429
        assert "throttled" in response.json()["detail"].lower()
        assert int(response["Retry-After"]) > 0
        # The throttle's history is kept under a keyed hash of the address, never the raw IP.
        from django.core.cache import cache
        from rest_framework.request import Request as DRFRequest
        from rest_framework.test import APIRequestFactory

        from presence.throttling import PresenceAnonThrottle

        assert cache.get("throttle_presence_127.0.0.1") is None
        ident = PresenceAnonThrottle().get_ident(DRFRequest(APIRequestFactory().get("/", REMOTE_ADDR="127.0.0.1")))
        assert "127.0.0.1" not in ident and len(cache.get(f"throttle_presence_{ident}")) == 3
        # Signed-in readers are not anonymous: not throttled by this scope.
        assert {user_client.get(f"{API}online/").status_code for _ in range(5)} == {200}


def statuses(client, requests: list[dict]) -> Counter:
    return Counter(client.get(f"{API}online/", **headers).status_code for headers in requests)


def test_a_new_x_forwarded_for_per_request_does_not_escape_the_throttle(client, request):
    """200 requests from one address, each claiming another address in X-Forwarded-For: the
    header of a peer that is no trusted proxy is ignored, so 120 pass and 80 are throttled."""
    presence.store.set_store(make_store("memory", request))
    spoofed = [{"REMOTE_ADDR": "192.0.2.10", "HTTP_X_FORWARDED_FOR": f"198.51.100.{n % 250}, 10.{n}.0.1"}
               for n in range(200)]
    assert statuses(client, spoofed) == Counter({200: 120, 429: 80})
    assert statuses(client, [{"REMOTE_ADDR": "192.0.2.11"}]) == Counter({200: 1})  # another client


def test_a_header_naming_its_own_peer_gets_no_budget_of_its_own(client, request):
    """A client that writes its own address into X-Forwarded-For looks like a connection a
    ``--proxy-headers`` server rewrote, whose address no trusted proxy vouches for. In a budget of
    its own it would double the client's; it is refused instead, and the client keeps exactly its
    120 requests."""
    presence.store.set_store(make_store("memory", request))
    own = [{"REMOTE_ADDR": "192.0.2.20", "HTTP_X_FORWARDED_FOR": "192.0.2.20"}] * 20
    assert statuses(client, own) == Counter({403: 20})
    response = client.get(f"{API}online/", REMOTE_ADDR="192.0.2.20", HTTP_X_FORWARDED_FOR="192.0.2.20")
    assert "PRESENCE_TRUSTED_PROXIES" in response.json()["detail"]
    assert statuses(client, [{"REMOTE_ADDR": "192.0.2.20"}] * 130) == Counter({200: 120, 429: 10})


def test_a_trusted_proxys_forwarded_address_is_the_client(client, request):
    """Behind a trusted proxy (which appends the address it saw), each client has a budget of
    its own, and what a client writes into the header itself still changes nothing."""
    presence.store.set_store(make_store("memory", request))
    with override_settings(PRESENCE_TRUSTED_PROXIES=["10.0.0.0/24"], PRESENCE_API_THROTTLE_RATE="5/min"):
        presence.store.set_store(make_store("memory", request))  # overriding settings reset it
        via_proxy = [{"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": f"203.0.113.{n}, 198.51.100.7"}
                     for n in range(10)]
        assert statuses(client, via_proxy) == Counter({200: 5, 429: 5})
        other = [{"REMOTE_ADDR": "10.0.0.3", "HTTP_X_FORWARDED_FOR": "198.51.100.8"}] * 5
        assert statuses(client, other) == Counter({200: 5})
        # The proxy's own address is not a client: requests without the header share its budget.
        assert statuses(client, [{"REMOTE_ADDR": "10.0.0.2"}] * 6) == Counter({200: 5, 429: 1})


def test_ipv6_clients_are_throttled_by_their_64_network(client, request):
    presence.store.set_store(make_store("memory", request))
    with override_settings(PRESENCE_API_THROTTLE_RATE="4/min"):
        presence.store.set_store(make_store("memory", request))
        same_host = [{"REMOTE_ADDR": f"2001:db8:1:2::{n:x}"} for n in range(1, 7)]
        assert statuses(client, same_host) == Counter({200: 4, 429: 2})
        assert statuses(client, [{"REMOTE_ADDR": "2001:db8:1:3::1"}]) == Counter({200: 1})


def test_throttling_can_be_turned_off(client, request):
    with override_settings(PRESENCE_API_THROTTLE_RATE=None):
        presence.store.set_store(make_store("memory", request))
        assert {client.get(f"{API}online/").status_code for _ in range(10)} == {200}


# -- schema and docs -------------------------------------------------------------------------


def test_schema_documents_every_endpoint_and_its_parameters(staff_client):
    response = staff_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    expected = {"online/", "rooms/", "rooms/{room}/", "token/", "history/", "history/ranking/", "peaks/"}
    assert set(paths) == {API + path for path in expected}

    def params(path):
        return {p["name"] for p in paths[API + path]["get"].get("parameters", [])}

    assert params("rooms/") == {"limit"}
    assert params("rooms/{room}/") == {"room"}
    assert params("history/") == {"page", "room", "user", "since", "until"}
    assert params("history/ranking/") == {"since", "until", "limit"}
    assert params("peaks/") == {"days"}
    for path, item in paths.items():
        ok = item["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok, path
    reader = schema["components"]["schemas"]["Reader"]
    assert set(reader["properties"]) == READER_KEYS


@pytest.mark.parametrize("prefix", ["/api/", API])  # the demo's URLs, and the app's own for any host
def test_schema_and_docs_are_for_staff_with_debug_off(client, user_client, staff_client, prefix):
    schema, docs = f"{prefix}schema/", f"{prefix}docs/"
    for url in (schema, docs):
        assert client.get(url).status_code == 403, url
        assert user_client.get(url).status_code == 403, url
        assert staff_client.get(url).status_code == 200, url
    with override_settings(PRESENCE_PUBLIC_API_DOCS=True):
        assert client.get(schema, {"format": "json"}).json()["paths"]
        assert client.get(docs).status_code == 200
    with override_settings(DEBUG=True):
        assert client.get(schema).status_code == 200
    with override_settings(DEBUG=True, PRESENCE_PUBLIC_API_DOCS=False):
        assert client.get(schema).status_code == 403


def test_docs_page_serves_its_assets_itself(staff_client):
    response = staff_client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs"):
        assert cdn not in html


# -- schemathesis ----------------------------------------------------------------------------


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors(staff_client, store, blog_articles):
    """Every operation, fed generated parameters with a staff session, never answers 5xx, and
    answers only documented status codes with documented bodies."""
    import schemathesis
    from django.core.wsgi import get_wsgi_application
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    checks = [not_a_server_error, response_schema_conformance, status_code_conformance]

    put(store, room_of(blog_articles[0]), "r1", position=0.5)
    session(room_of(blog_articles[0]), 5)
    app = get_wsgi_application()
    with override_settings(PRESENCE_PUBLIC_API_DOCS=True):
        schema = schemathesis.openapi.from_wsgi("/api/schema/", app)
    cookies = {"sessionid": staff_client.cookies["sessionid"].value}

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7
    statuses: dict[str, set[int]] = {}

    def fuzz(operation) -> None:
        seen = statuses.setdefault(operation.label, set())

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case):
            seen.add(case.call_and_validate(cookies=cookies, checks=checks).status_code)

        check()

    for operation in operations:
        fuzz(operation)
    # The staff session was used (never 403), and every operation but the room detail (its
    # generated room names name nothing) answered 200 at least once.
    assert all(403 not in codes for codes in statuses.values()), statuses
    assert all(200 in codes for label, codes in statuses.items() if "{room}" not in label), statuses
