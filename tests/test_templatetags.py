"""The widget's template tags: server-rendered numbers, escaping, plurals, the config."""

from __future__ import annotations

import json
import re

import pytest
from asgiref.sync import async_to_sync
from django.template import Context, Template
from django.test import Client, RequestFactory, override_settings
from django.utils import translation

import presence.store
from presence import identity
from presence.store.base import Reader
from presence.store.memory import MemoryStore
from presence.templatetags.presence import room_of

pytestmark = pytest.mark.usefixtures("fresh_caches")


@pytest.fixture
def store():
    made = MemoryStore("tags-test")
    presence.store.set_store(made)
    yield made
    presence.store.reset()


@pytest.fixture
def articles(db):
    from blog.models import Article

    return [
        Article.objects.create(title=title, slug=f"tag-article-{n}", body="Words. " * 20)
        for n, title in enumerate(["Plain title", "<script>alert('x')</script> & friends"])
    ]


def render(source: str, **context) -> str:
    return Template("{% load presence %}" + source).render(Context(context))


def readers(store, room: str, count: int) -> None:
    for n in range(count):
        async_to_sync(store.join)(room, Reader(id=f"r{n}", name=None, position=0.5, joined_at=1, updated_at=1))
        async_to_sync(store.claim_online)(f"r{n}")


class Broken(MemoryStore):
    async def online(self):
        raise ConnectionError("down")

    async def ranking(self, limit):
        raise ConnectionError("down")

    async def room_state(self, room, limit):
        raise ConnectionError("down")


def text_of(html: str, attribute: str) -> str:
    match = re.search(attribute + r'[^>]*>.*?data-presence-text[^>]*>([^<]*)<', html, re.S)
    assert match, html
    return match.group(1)


def test_online_count_rendered_with_plurals(store, db):
    assert text_of(render("{% presence_online %}"), "data-presence-online") == "0 readers online"
    readers(store, "article:1", 1)
    html = render("{% presence_online %}")
    assert text_of(html, "data-presence-online") == "1 reader online"
    assert 'aria-live="polite"' in html
    readers(store, "article:1", 3)
    assert text_of(render("{% presence_online %}"), "data-presence-online") == "3 readers online"


def test_store_outage_renders_a_dash(db):
    presence.store.set_store(Broken("broken"))
    assert text_of(render("{% presence_online %}"), "data-presence-online") == "– readers online"
    assert "–" in render("{% presence_ranking %}")


def test_readers_of_an_object(store, articles):
    article = articles[0]
    html = render("{% presence_readers article %}", article=article)
    assert f'data-presence-room="article:{article.pk}"' in html
    assert text_of(html, "data-presence-readers") == "0 people reading now"
    readers(store, f"article:{article.pk}", 1)
    assert text_of(render("{% presence_readers article %}", article=article), "data-presence-readers") == (
        "1 person reading now"
    )
    readers(store, f"article:{article.pk}", 4)
    assert text_of(render("{% presence_readers article %}", article=article), "data-presence-readers") == (
        "4 people reading now"
    )


def test_room_resolved_from_the_configured_field(articles):
    article = articles[0]
    assert room_of(article) == f"article:{article.pk}"
    assert room_of(f"article:{article.pk}") == f"article:{article.pk}"
    assert room_of(f"article:0{article.pk}") is None  # only a room the server accepts (tests/test_rooms.py)
    assert room_of("not a room") is None
    assert room_of(object()) is None
    with override_settings(PRESENCE_ROOM_KINDS={"post": {"model": "blog.Article", "field": "slug"}}):
        assert room_of(article) == "post:tag-article-0"


def test_ranking_escapes_titles_and_links(store, articles):
    readers(store, f"article:{articles[1].pk}", 2)
    readers(store, f"article:{articles[0].pk}", 1)
    html = render("{% presence_ranking limit=3 %}")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; friends" in html
    assert f'<a class="presence-ranking-link" href="{articles[1].get_absolute_url()}">' in html
    assert html.index("friends") < html.index("Plain title")
    assert "2 readers" in html and "1 reader<" in html
    assert 'data-limit="3"' in html
    assert 'aria-live="polite"' in html


def test_empty_ranking(store, db):
    html = render("{% presence_ranking %}")
    assert "Nobody is reading right now." in html
    assert "<li>" not in html


# Transactional: checking the token reads the session through Channels' database_sync_to_async, which
# closes the connection it finds in an open transaction (on PostgreSQL that ends the test's own).
@pytest.mark.django_db(transaction=True)
def test_script_config_is_json_once_per_page(articles, django_user_model):
    user = django_user_model.objects.create_user("ada", first_name="</script><b>Ada", password="pw")
    request = RequestFactory().get("/", HTTP_HOST="localhost")
    request.user = user
    browser = Client()
    browser.force_login(user)
    request.session = browser.session  # the signed-in session the token is bound to
    html = render(
        "{% presence_script room=article %}{% presence_script %}", request=request, user=user, article=articles[0]
    )
    assert html.count('type="module"') == 1
    assert html.count('id="presence-config"') == 1
    assert "</script><b>" not in html
    config = json.loads(re.search(r'id="presence-config" type="application/json">(.*?)</script>', html, re.S)[1])
    assert config["room"] == f"article:{articles[0].pk}"
    assert config["url"] == "ws://localhost/ws/presence/"
    assert config["name"] == "</script><b>Ada"
    assert async_to_sync(identity.identity_from_token)(config["token"]) == f"user:{user.pk}"
    assert config["heartbeat"] == 20 and config["idleAfter"] == 60
    assert config["api"]["beacon"] == "/api/presence/beacon/"
    assert [1, "%(count)s person reading now"] in config["text"]["reading"]


def test_script_for_anonymous_readers_and_context_room(articles, django_user_model):
    from django.contrib.auth.models import AnonymousUser

    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    html = render("{% presence_script %}", request=request, user=request.user, presence_room=articles[1])
    config = json.loads(re.search(r'type="application/json">(.*?)</script>', html, re.S)[1])
    assert config["token"] is None and config["name"] is None
    assert config["room"] == f"article:{articles[1].pk}"


def test_display_name_is_never_the_username_unless_the_site_names_it(db, django_user_model):
    from presence.templatetags.presence import display_name

    user = django_user_model.objects.create_user("grace", email="g@example.org", password="pw")
    assert display_name(user) is None  # no first name: no name (the widget says "Anonymous reader")
    request = RequestFactory().get("/", HTTP_HOST="localhost")
    request.user = user
    html = render("{% presence_script %}", request=request, user=user)
    config = json.loads(re.search(r'type="application/json">(.*?)</script>', html, re.S)[1])
    assert config["name"] is None and "grace" not in html
    user.first_name = "  Grace  "
    assert display_name(user) == "Grace"
    with override_settings(PRESENCE_USER_NAME_FIELD="email"):
        assert display_name(user) == "g@example.org"
    with override_settings(PRESENCE_USER_NAME_FIELD="username"):  # the site's explicit opt-in
        assert display_name(user) == "grace"
    with override_settings(PRESENCE_USER_NAME_FIELD=None):
        assert display_name(user) is None


def test_timeline_renders_the_room_and_name_field(articles):
    from django.contrib.auth.models import AnonymousUser

    html = render("{% presence_timeline article %}", article=articles[0], user=AnonymousUser())
    assert f'data-presence-room="article:{articles[0].pk}"' in html
    assert "data-presence-name" in html and 'maxlength="40"' in html
    assert 'role="list"' in html


def test_demo_pages_render_the_widgets(client, store, articles):
    page = client.get(articles[0].get_absolute_url()).content.decode()
    assert "data-presence-timeline" in page and "data-presence-readers" in page and "data-presence-online" in page
    assert "live.js" not in page
    home = client.get("/").content.decode()
    assert "data-presence-ranking" in home


def config_of(html: str) -> dict:
    return json.loads(re.search(r'id="presence-config" type="application/json">(.*?)</script>', html, re.S)[1])


@pytest.mark.parametrize(("language", "rendered", "one", "many"), [
    ("zh-hans", "zh-hans", "1 人正在阅读", "3 人正在阅读"),
    ("de", "de", "1 Person liest gerade", "3 Personen lesen gerade"),
    ("fr", "fr", "1 personne lit en ce moment", "3 personnes lisent en ce moment"),
    # No catalogue of the app for Japanese: English text, so English plural rules for the client.
    ("ja", "en", "1 person reading now", "3 people reading now"),
    ("en", "en", "1 person reading now", "3 people reading now"),
])
def test_the_client_gets_the_language_the_server_rendered(store, articles, language, rendered, one, many):
    article = articles[0]
    room = f"article:{article.pk}"
    with translation.override(language):
        readers(store, room, 1)
        assert text_of(render("{% presence_readers article %}", article=article), "data-presence-readers") == one
        readers(store, room, 3)
        assert text_of(render("{% presence_readers article %}", article=article), "data-presence-readers") == many
        config = config_of(render("{% presence_script room=article %}", article=article))
    assert config["lang"] == rendered
    texts = [text for _, text in config["text"]["reading"]]
    assert one in [text % {"count": 1} for text in texts] and many in [text % {"count": 3} for text in texts]


def test_widget_and_admin_texts_are_translated_to_chinese(store, articles):
    from django.contrib.auth.models import AnonymousUser
    from django.utils.translation import gettext

    with translation.override("zh-hans"):
        config = config_of(render("{% presence_script %}"))
        timeline = render("{% presence_timeline article %}", article=articles[0], user=AnonymousUser())
        ranking = render("{% presence_ranking %}")
        admin_title = gettext("Reading ranking")
    assert config["text"]["anonymous"] == "匿名读者"
    assert config["text"]["minutes"] == "%(minutes)s 分钟"
    assert "向其他读者显示的名字" in timeline and 'placeholder="匿名读者"' in timeline
    assert "正在热读" in ranking and "现在没有人在阅读。" in ranking
    assert admin_title == "阅读排行"
