"""Rooms (presence/rooms.py): one canonical room per object, scoped to what the public may see,
refusals cached briefly, cached resolutions dropped when an object is saved, and
``PRESENCE_ROOM_KINDS`` checked (presence/checks.py) and never a 500 or a 1011 when wrong.

``tests/roomsapp`` is a blog shaped unlike the demo's (slug keys on a case-insensitive collation,
drafts, private and scheduled posts, a permalink method); ``post_model`` installs it for one test.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.db import connection
from django.template import Context, Template
from django.test import RequestFactory, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

import presence.store
from presence import live, rooms
from presence.conf import app_settings
from presence.errors import InvalidRoom
from presence.room_cache import RoomCache
from presence.store.base import Reader
from presence.store.memory import MemoryStore
from presence.templatetags.presence import room_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_caches")]

API = "/api/presence/"
POSTS = {"post": {"model": "roomsapp.Post", "field": "slug", "queryset": "published", "url": "permalink"}}
DEMO = {"article": {"model": "blog.Article", "queryset": "published"}}  # as in presence_site/settings.py


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def post_model(transactional_db):
    """``tests.roomsapp`` installed, its table created (and dropped afterwards)."""
    with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, "tests.roomsapp"]):
        from tests.roomsapp.models import POSTGRES_COLLATION, Post

        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(POSTGRES_COLLATION)
        with connection.schema_editor() as editor:
            editor.create_model(Post)
        try:
            yield Post
        finally:
            with connection.schema_editor() as editor:
                editor.delete_model(Post)


@pytest.fixture
def posts(post_model):
    """A public post, a draft, a private post and a scheduled one, keyed ``post:<slug>``."""
    Post = post_model
    later = timezone.now() + timedelta(days=1)
    made = {
        "public": Post.objects.create(slug="hello-world", title="Hello, world"),
        "draft": Post.objects.create(slug="draft-post", title="Secret draft", status=Post.Status.DRAFT),
        "private": Post.objects.create(slug="private-post", title="Secret private", status=Post.Status.PRIVATE),
        "future": Post.objects.create(slug="future-post", title="Secret future", published_at=later),
    }
    with override_settings(PRESENCE_ROOM_KINDS=POSTS):
        yield made


@pytest.fixture
def future_article(db):
    """A demo article scheduled for tomorrow: the demo's views hide it, so must its room."""
    from blog.models import Article

    return Article.objects.create(
        title="Scheduled secret", slug="scheduled-secret", body="Soon.", published_at=timezone.now() + timedelta(days=1)
    )


def aliases(pk: int) -> list[str]:
    """Keys that ``int()`` reads as ``pk`` but that are not its canonical string."""
    key = str(pk)
    return [f"0{key}", f"00{key}", f"0_{key}", "0" * (64 - len(key)) + key]


def refused(room: object) -> bool:
    try:
        rooms.resolve_sync(room)
    except InvalidRoom:
        return True
    return False


def put(room: str, reader_id: str) -> None:
    """A reader in a room as a hub stores it (e.g. joined before the object was unpublished)."""
    from asgiref.sync import async_to_sync

    store = presence.store.get_store()
    async_to_sync(store.join)(room, Reader(id=reader_id, name=None, position=None, joined_at=1, updated_at=1))


def render(source: str, **context) -> str:
    return Template("{% load presence %}" + source).render(Context(context))


def script_room(html: str) -> str | None:
    return json.loads(re.search(r'id="presence-config" type="application/json">(.*?)</script>', html, re.S)[1])["room"]


async def joined(client, room: object) -> dict:
    await client.send_json_to({"type": "join", "room": room})
    return await client.receive_json_from(timeout=5)  # a loaded machine's Redis Cluster may take over 1 s


# -- one canonical room per object ----------------------------------------------------------


def test_aliases_of_an_article_are_refused(articles):
    article = articles[0]
    assert rooms.resolve_sync(f"article:{article.pk}").title == article.title
    for alias in aliases(article.pk):
        assert refused(f"article:{alias}"), alias


async def test_aliases_are_refused_on_the_socket_and_never_stored(ws, hub, article):
    client = await ws(session="aliasreader1")
    await client.receive_json_from()
    for alias in aliases(article.pk):
        reply = await joined(client, f"article:{alias}")
        assert (reply["type"], reply["code"]) == ("error", "invalid_room"), alias
    assert await hub.store.ranking(10) == [] and hub.rooms == {}
    assert (await joined(client, f"article:{article.pk}"))["count"] == 1
    assert await hub.store.ranking(10) == [(f"article:{article.pk}", 1)]


def test_slug_keys_match_exactly_on_a_case_insensitive_collation(posts, post_model):
    assert post_model.objects.filter(slug="HELLO-World").exists(), "the column's collation is case-insensitive"
    assert rooms.resolve_sync("post:hello-world").title == "Hello, world"
    for alias in ("Hello-World", "HELLO-WORLD", "hello-World"):
        assert refused(f"post:{alias}"), alias


async def test_aliases_cannot_take_over_the_ranking(ws, hub, articles):
    """30 connections x 10 aliases of one article, against ten honest articles with two readers each."""
    presence.store.set_store(hub.store)
    target, honest = articles[0], articles[1:11]
    for n, article in enumerate(honest):
        for k in range(2):
            reader = await ws(session=f"honest{n:02d}reader{k}")
            await reader.receive_json_from()
            assert "count" in await joined(reader, f"article:{article.pk}")
    codes = []
    for n in range(30):
        attacker = await ws(session=f"attacker{n:04d}")
        await attacker.receive_json_from()
        for alias in aliases(target.pk) + [f"{'0' * k}{target.pk}" for k in range(3, 9)]:
            codes.append((await joined(attacker, f"article:{alias}")).get("code"))
    assert set(codes) == {"invalid_room"} and len(codes) == 300
    ranking = (await sync_to_async(APIClient().get)(f"{API}rooms/", {"limit": 10})).json()
    assert sorted(entry["room"] for entry in ranking) == sorted(f"article:{a.pk}" for a in honest)
    assert {entry["count"] for entry in ranking} == {2}


# -- drafts, private and scheduled objects -----------------------------------------------------


@pytest.mark.parametrize("which", ["draft", "private", "future"])
async def test_unpublished_posts_are_refused_on_the_socket(ws, hub, posts, which):
    client = await ws(session="draftreader1")
    await client.receive_json_from()
    reply = await joined(client, f"post:{posts[which].slug}")
    assert (reply["type"], reply["code"]) == ("error", "invalid_room")
    missing = await joined(client, "post:no-such-post")
    assert (missing["code"], missing["message"]) == (reply["code"], reply["message"])
    assert await hub.store.ranking(10) == [] and hub.rooms == {}
    assert (await joined(client, "post:hello-world"))["count"] == 1


async def test_a_scheduled_demo_article_is_refused_on_the_socket(ws, hub, future_article):
    client = await ws(session="futurereader")
    await client.receive_json_from()
    assert (await joined(client, f"article:{future_article.pk}"))["code"] == "invalid_room"
    assert await hub.store.ranking(10) == []


def test_a_draft_and_a_missing_id_answer_the_same_404(posts, future_article):
    client = APIClient()
    missing = client.get(f"{API}rooms/post:no-such-post/")
    assert missing.status_code == 404
    for which in ("draft", "private", "future"):
        response = client.get(f"{API}rooms/post:{posts[which].slug}/")
        assert (response.status_code, response.content) == (404, missing.content), which
    assert client.get(f"{API}rooms/post:hello-world/").status_code == 200
    with override_settings(PRESENCE_ROOM_KINDS=DEMO):
        last = type(future_article).objects.order_by("-pk").first().pk
        missing_article = client.get(f"{API}rooms/article:{last + 1000}/")
        scheduled = client.get(f"{API}rooms/article:{future_article.pk}/")
    assert missing_article.status_code == 404
    assert (scheduled.status_code, scheduled.content) == (404, missing_article.content)


def test_unpublished_rooms_never_show_in_the_ranking(posts):
    """Readers who joined before a post was unpublished: its title and URL stay hidden."""
    presence.store.set_store(MemoryStore("ranking-test"))
    for which in ("draft", "private", "future"):
        for n in range(5):
            put(f"post:{posts[which].slug}", f"{which}{n}")
    put("post:hello-world", "public0")
    expected = [{"room": "post:hello-world", "count": 1, "title": "Hello, world", "url": "/posts/hello-world/"}]
    response = APIClient().get(f"{API}rooms/", {"limit": 3})
    assert response.json() == expected, "the top three by count are unpublished: the next ones are fetched"
    assert b"Secret" not in response.content
    assert live.live_ranking(10) == expected
    html = render("{% presence_ranking limit=3 %}")
    assert "Hello, world" in html and "Secret" not in html and "draft-post" not in html


def test_a_draft_previewed_in_the_site_joins_no_room(posts):
    draft = posts["draft"]
    request = RequestFactory().get("/")
    assert script_room(render("{% presence_script room=post %}", request=request, post=draft)) is None
    assert script_room(render("{% presence_script %}", request=RequestFactory().get("/"), presence_room=draft)) is None
    assert "data-presence-room" not in render("{% presence_readers post %}", post=draft)
    assert "data-presence-room" not in render("{% presence_timeline post %}", post=draft)
    public = render("{% presence_readers post %}", post=posts["public"])
    assert 'data-presence-room="post:hello-world"' in public


def test_room_of_gives_the_canonical_key(posts, articles):
    assert room_of(posts["public"]) == "post:hello-world"
    assert room_of("post:hello-world") == "post:hello-world"
    assert room_of("post:HELLO-WORLD") is None and room_of("post:draft-post") is None
    with override_settings(PRESENCE_ROOM_KINDS=DEMO):
        article = articles[0]
        assert room_of(article) == f"article:{article.pk}"
        assert room_of(f"article:0{article.pk}") is None


# -- caching: refusals briefly, and saves seen at once in the saving process ------------------


def test_publication_is_seen_at_once_in_the_saving_process(future_article):
    room = f"article:{future_article.pk}"
    assert refused(room)
    future_article.published_at = timezone.now() - timedelta(minutes=1)
    future_article.save()
    assert rooms.resolve_sync(room).title == "Scheduled secret"


def test_a_new_object_is_seen_at_once(posts, post_model):
    assert refused("post:brand-new")
    post_model.objects.create(slug="brand-new", title="Brand new")
    assert rooms.resolve_sync("post:brand-new").url == "/posts/brand-new/"


def test_refusals_expire_after_a_few_seconds(future_article, monkeypatch):
    """A publication in another process (an ``update()`` sends no signal here) is seen within
    ``PRESENCE_ROOM_REFUSAL_SECONDS``."""
    now = [1000.0]
    monkeypatch.setattr(rooms, "cache", RoomCache(clock=lambda: now[0]))
    room = f"article:{future_article.pk}"
    assert refused(room)
    type(future_article).objects.filter(pk=future_article.pk).update(published_at=timezone.now())
    now[0] += 1
    assert refused(room), "refusals are cached (a flood of made-up names costs no queries)"
    now[0] += app_settings.ROOM_REFUSAL_SECONDS
    assert rooms.resolve_sync(room).title == "Scheduled secret"
    with override_settings(PRESENCE_ROOM_REFUSAL_SECONDS=60):
        assert refused("article:999999")
        type(future_article).objects.bulk_create([type(future_article)(pk=999999, title="Made elsewhere", slug="x")])
        now[0] += 30
        assert refused("article:999999")
        now[0] += 31
        assert not refused("article:999999")


def test_unpublishing_or_deleting_drops_the_cached_room_at_once(articles):
    kept, unpublished, deleted = articles[:3]
    for article in (kept, unpublished, deleted):
        rooms.resolve_sync(f"article:{article.pk}")
    unpublished.published_at = timezone.now() + timedelta(days=3)
    unpublished.save()
    deleted_room = f"article:{deleted.pk}"
    deleted.delete()
    assert refused(f"article:{unpublished.pk}") and refused(deleted_room)
    assert not refused(f"article:{kept.pk}")


def test_a_renamed_slug_leaves_its_old_room(posts):
    post = posts["public"]
    assert rooms.resolve_sync("post:hello-world").url == "/posts/hello-world/"
    post.slug = "hello-again"
    post.save()
    assert refused("post:hello-world")
    assert rooms.resolve_sync("post:hello-again").url == "/posts/hello-again/"


# -- URLs for any object ----------------------------------------------------------------------


def test_url_from_a_method_name_a_callable_or_nothing(posts, articles):
    assert rooms.resolve_sync("post:hello-world").url == "/posts/hello-world/"
    kinds = {
        "post": {**POSTS["post"], "url": lambda post: f"/p/{post.pk}/"},
        "plain": {"model": "roomsapp.Post", "field": "slug", "queryset": "tests.roomsapp.querysets.public_posts"},
        "article": "blog.Article",
    }
    with override_settings(PRESENCE_ROOM_KINDS=kinds):
        assert rooms.resolve_sync("post:hello-world").url == f"/p/{posts['public'].pk}/"
        assert rooms.resolve_sync("plain:hello-world").url is None  # no get_absolute_url, no url option
        assert rooms.resolve_sync(f"article:{articles[0].pk}").url == articles[0].get_absolute_url()
        assert refused("plain:draft-post")


def test_a_failing_url_leaves_the_room_without_a_link(posts, caplog):
    def broken(post):
        raise RuntimeError("no route")

    with override_settings(PRESENCE_ROOM_KINDS={"post": {**POSTS["post"], "url": broken}}):
        with caplog.at_level(logging.ERROR, logger="presence"):
            assert rooms.resolve_sync("post:hello-world").url is None
            rooms.cache_clear()
            assert rooms.resolve_sync("post:hello-world").url is None
    assert len([r for r in caplog.records if "url" in r.getMessage()]) == 1, "logged once"


# -- PRESENCE_ROOM_KINDS checked, and never a 500 or a 1011 -------------------------------------


def room_kind_messages(kinds) -> list:
    with override_settings(PRESENCE_ROOM_KINDS=kinds, DEBUG=True):
        return [m for m in run_checks() if (m.id or "").startswith(("presence.E1", "presence.W1"))]


def other_model_queryset():
    return get_user_model().objects.all()


def raising_queryset():
    raise RuntimeError("boom")


ARTICLE = "blog.Article"


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ([("article", ARTICLE)], "presence.E101"),
        ("blog.Article", "presence.E101"),
        ({"Article": ARTICLE}, "presence.E102"),
        ({"a-b": ARTICLE}, "presence.E102"),
        ({"x" * 21: ARTICLE}, "presence.E102"),
        ({1: ARTICLE}, "presence.E102"),
        ({"article": 42}, "presence.E103"),
        ({"article": {"field": "slug"}}, "presence.E103"),
        ({"article": {"model": ARTICLE, "feild": "slug"}}, "presence.E103"),
        ({"article": {"model": ARTICLE, "field": 1}}, "presence.E103"),
        ({"article": {"model": ARTICLE, "queryset": 1}}, "presence.E103"),
        ({"article": {"model": ARTICLE, "url": 1}}, "presence.E103"),
        ({"article": "blog.Nope"}, "presence.E104"),
        ({"article": "blog"}, "presence.E104"),
        ({"article": "nosuchapp.Article"}, "presence.E104"),
        ({"article": {"model": ARTICLE, "field": "nope"}}, "presence.E105"),
        ({"article": {"model": ARTICLE, "queryset": "nope"}}, "presence.E106"),
        ({"article": {"model": ARTICLE, "queryset": "get_absolute_url"}}, "presence.E106"),
        ({"article": {"model": ARTICLE, "queryset": "blog.models.nope"}}, "presence.E107"),
        ({"article": {"model": ARTICLE, "queryset": "nosuchmodule.published"}}, "presence.E107"),
        ({"article": {"model": ARTICLE, "queryset": "tests.roomsapp.querysets.not_a_queryset"}}, "presence.E108"),
        ({"article": {"model": ARTICLE, "queryset": other_model_queryset}}, "presence.E108"),
        ({"article": {"model": ARTICLE, "queryset": raising_queryset}}, "presence.E108"),
        ({"article": {"model": ARTICLE, "url": "nope"}}, "presence.E109"),
        ({"article": {"model": ARTICLE, "url": "blog.models.nope"}}, "presence.E109"),
        ({"article": {"model": ARTICLE, "field": "title"}}, "presence.W101"),
    ],
)
def test_a_wrong_room_kind_is_a_check_error_with_a_one_line_fix(db, kinds, expected):
    messages = room_kind_messages(kinds)
    assert [m.id for m in messages] == [expected], [str(m) for m in messages]
    (message,) = messages
    assert message.hint and "\n" not in message.hint and "\n" not in message.msg
    assert message.is_serious() == expected.startswith("presence.E")


def test_valid_room_kinds_pass_the_check(posts, db):
    assert room_kind_messages(DEMO) == []
    assert room_kind_messages(POSTS) == []
    assert room_kind_messages({"post": {**POSTS["post"], "queryset": "tests.roomsapp.querysets.public_posts"}}) == []
    assert room_kind_messages({"post": {**POSTS["post"], "url": lambda post: None}}) == []
    assert room_kind_messages({}) == []


BROKEN = {"article": "blog.Nope", "good": ARTICLE, "bad": {"model": ARTICLE, "queryset": other_model_queryset}}


def test_a_wrong_entry_is_a_404_not_a_500(article, caplog):
    client = APIClient()
    with override_settings(PRESENCE_ROOM_KINDS=BROKEN), caplog.at_level(logging.ERROR, logger="presence"):
        missing = client.get(f"{API}rooms/good:{article.pk + 1000}/")
        for _ in range(3):
            for room in (f"article:{article.pk}", f"bad:{article.pk}"):
                response = client.get(f"{API}rooms/{room}/")
                assert (response.status_code, response.content) == (404, missing.content)
        assert client.get(f"{API}rooms/good:{article.pk}/").status_code == 200
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("presence")]
    assert len([m for m in logged if "blog.Nope" in m]) == 1, logged
    assert len([m for m in logged if "'bad'" in m]) == 1, logged


async def test_a_wrong_entry_is_invalid_room_on_the_socket_not_1011(ws, hub, article):
    with override_settings(PRESENCE_ROOM_KINDS=BROKEN):
        client = await ws(session="brokenkinds1")
        await client.receive_json_from()
        for room in (f"article:{article.pk}", f"bad:{article.pk}"):
            reply = await joined(client, room)
            assert (reply["type"], reply["code"]) == ("error", "invalid_room")
        assert (await joined(client, f"good:{article.pk}"))["count"] == 1
        await client.send_json_to({"type": "ping"})
        assert (await client.receive_json_from())["type"] == "pong"


def test_the_configuration_is_resolved_once_per_setting(posts):
    first = rooms.kinds()
    assert rooms.kinds() is first and set(first) == {"post"}
    with override_settings(PRESENCE_ROOM_KINDS={"story": {**POSTS["post"]}}):
        assert set(rooms.kinds()) == {"story"}
        assert rooms.resolve_sync("story:hello-world").title == "Hello, world"
    assert rooms.kinds() is not first and set(rooms.kinds()) == {"post"}


def test_saves_are_seen_through_evictions_of_the_bounded_cache(articles):
    with override_settings(PRESENCE_ROOM_CACHE_SIZE=2):
        for article in (articles[0], articles[1], articles[2], articles[0]):  # the first is evicted, then back
            rooms.resolve_sync(f"article:{article.pk}")
        assert len(rooms.cache) == 2
        room = f"article:{articles[0].pk}"
        articles[0].delete()
        assert refused(room)
