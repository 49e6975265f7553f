"""Admin for the reading history: read-only changelists, ranking and live pages, charts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import django
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.staticfiles import finders
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone

from blog.models import Article
from presence import live
from presence.charts import bar_chart_svg
from presence.errors import Unavailable
from presence.models import EndReason, OnlinePeak, ReadingSession
from tests.support.factories import reading_session

pytestmark = pytest.mark.django_db

EVIL = '<script>alert("x")</script> & Co'
EVIL_ESCAPED = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co"

CHANGELIST = "admin:presence_readingsession_changelist"
RANKING = "admin:presence_readingsession_ranking"
LIVE = "admin:presence_readingsession_live"
LIVE_DATA = "admin:presence_readingsession_live_data"


def session(room: str, reader: str, *, ago: timedelta, seconds: float = 65.0, **fields) -> ReadingSession:
    return reading_session(room, reader, started_at=timezone.now() - ago, seconds=seconds, **fields)


@pytest.fixture
def history(django_user_model):
    """Sessions of a normal and a hostile-titled article, signed-in and anonymous, over 20 days."""
    ada = django_user_model.objects.create_user("ada", "ada@example.com", "pw")
    plain = Article.objects.create(title="Plain article", slug="plain", body="Words.")
    evil = Article.objects.create(title=EVIL, slug="evil", body="Words.")
    plain_room, evil_room = f"article:{plain.pk}", f"article:{evil.pk}"
    return {
        "ada": ada,
        "plain": plain,
        "evil": evil,
        "sessions": [
            session(evil_room, "anon1", ago=timedelta(hours=1), title=EVIL, name="Bob", furthest=1.0),
            session(evil_room, "anon2", ago=timedelta(hours=2), title=EVIL, furthest=0.95, seconds=3700),
            session(evil_room, "anon3", ago=timedelta(hours=3), title=EVIL, reason=EndReason.OPEN, furthest=None),
            session(plain_room, "useradar", ago=timedelta(days=3), title="Plain article", user=ada, furthest=0.2),
            session(plain_room, "anon1", ago=timedelta(days=20), title="Plain article", reason=EndReason.TIMEOUT),
        ],
    }


@pytest.fixture
def viewer(client, django_user_model):
    """A staff user who may only view the reading history."""
    user = django_user_model.objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="presence", codename__in=["view_readingsession", "view_onlinepeak"]
        )
    )
    client.force_login(user)
    return client


@pytest.fixture
def staff_without_permissions(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("clerk", "c@example.com", "pw", is_staff=True))
    return client


@pytest.fixture
def non_staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("reader", "r@example.com", "pw"))
    return client


@pytest.fixture
def fake_live(monkeypatch, history):
    """Live numbers from a stubbed store read: a hostile title among them."""
    evil = history["evil"]
    rooms = [
        {"room": f"article:{evil.pk}", "count": 7, "title": EVIL, "url": evil.get_absolute_url()},
        {"room": "article:424242", "count": 2, "title": "", "url": None},
    ]
    monkeypatch.setattr(live, "online_count", lambda: 42)
    monkeypatch.setattr(live, "live_ranking", lambda limit=10: rooms[:limit])
    return rooms


# -- changelist ------------------------------------------------------------------------------


def changelist(client, **params):
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200, response.content[:500]
    return response


@pytest.mark.parametrize("as_viewer", [False, True], ids=["superuser", "view-only staff"])
def test_changelist_columns_filters_and_search(request, history, as_viewer):
    client = request.getfixturevalue("viewer" if as_viewer else "admin_client")
    evil_room = f"article:{history['evil'].pk}"
    plain_room = f"article:{history['plain'].pk}"
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)

    response = changelist(client)
    assert response.context["cl"].result_count == 5
    content = response.content.decode()
    assert 'field-reader">ada<' in content  # a signed-in reader by username
    assert 'field-reader">anon2<' in content  # an anonymous one by reader id
    assert "1\xa0h\xa001\xa0min" in content and "1\xa0min\xa005\xa0s" in content  # durations, human readable
    assert "95%" in content and "100%" in content  # furthest positions as percentages
    assert "went silent" in content  # end reason label
    assert EVIL_ESCAPED in content and EVIL not in content
    # The article filter offers each room under its latest title, escaped.
    assert f"?room={evil_room.replace(':', '%3A')}" in content

    cases = [
        ({"room": evil_room}, 3),
        ({"room": plain_room}, 2),
        ({"reader": "user"}, 1),
        ({"reader": "anonymous"}, 4),
        ({"end_reason__exact": EndReason.TIMEOUT}, 1),
        ({"end_reason__exact": EndReason.OPEN}, 1),
        (
            {"started_at__gte": str(midnight - timedelta(days=7)), "started_at__lt": str(midnight + timedelta(days=1))},
            4,
        ),
        ({"started_at__year": str((timezone.now() - timedelta(days=20)).year)}, None),
        ({"q": "Bob"}, 1),  # name
        ({"q": "ada"}, 1),  # user's username
        ({"q": "Plain"}, 2),  # title
        ({"q": "<script>"}, 3),
    ]
    if django.VERSION >= (5, 0):  # facets (counts shown next to each choice) are new in Django 5.0
        cases.append(({"_facets": "", "room": evil_room}, 3))
    for params, expected in cases:
        count = changelist(client, **params).context["cl"].result_count
        if expected is not None:
            assert count == expected, params


def test_changelist_links_to_the_pages_and_has_no_add_link(admin_client, history):
    content = changelist(admin_client).content.decode()
    assert reverse(RANKING) in content
    assert reverse(LIVE) in content
    assert reverse("admin:presence_readingsession_add") not in content


def test_onlinepeak_changelist_is_read_only(admin_client):
    OnlinePeak.objects.create(date=datetime(2026, 3, 2).date(), count=12, at=datetime(2026, 3, 2, 9, tzinfo=UTC))
    response = admin_client.get(reverse("admin:presence_onlinepeak_changelist"))
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1
    assert reverse("admin:presence_onlinepeak_add") not in response.content.decode()
    assert admin_client.get(reverse("admin:presence_onlinepeak_add")).status_code == 403


@pytest.mark.parametrize(
    "language, app, sessions, peaks, column",
    [
        ("en", "Live readership", "Reading sessions", "Online peaks", "End reason"),
        ("zh-hans", "实时阅读", "阅读会话", "在线峰值", "结束原因"),
        ("de", "Live-Leserschaft", "Lesesitzungen", "Online-Spitzen", "Endegrund"),
    ],
)
def test_the_admin_names_the_app_its_models_and_columns_in_the_sites_language(
    admin_client, history, settings, language, app, sessions, peaks, column
):
    settings.LANGUAGE_CODE = language
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert app in index and sessions in index and peaks in index
    assert column in changelist(admin_client).content.decode()


# -- read-only, deletable ---------------------------------------------------------------------


def test_history_cannot_be_added_or_changed(admin_client, history):
    row = history["sessions"][0]
    assert admin_client.get(reverse("admin:presence_readingsession_add")).status_code == 403
    assert admin_client.post(reverse("admin:presence_readingsession_add"), {"room": "article:1"}).status_code == 403

    change_url = reverse("admin:presence_readingsession_change", args=[row.pk])
    response = admin_client.get(change_url)  # a read-only view of the evidence
    assert response.status_code == 200
    assert 'name="_save"' not in response.content.decode()
    assert admin_client.post(change_url, {"name": "Mallory", "duration_seconds": "1"}).status_code == 403
    row.refresh_from_db()
    assert row.name == "Bob"


def test_superuser_deletes_a_session(admin_client, history):
    row = history["sessions"][0]
    url = reverse("admin:presence_readingsession_delete", args=[row.pk])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not ReadingSession.objects.filter(pk=row.pk).exists()


def test_bulk_delete_action(admin_client, history):
    pks = [s.pk for s in history["sessions"][:2]]
    response = admin_client.post(
        reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": pks, "post": "yes"}
    )
    assert response.status_code == 302
    assert ReadingSession.objects.count() == 3


def test_view_only_staff_cannot_delete(viewer, history):
    row = history["sessions"][0]
    url = reverse("admin:presence_readingsession_delete", args=[row.pk])
    assert viewer.post(url, {"post": "yes"}).status_code == 403
    assert ReadingSession.objects.filter(pk=row.pk).exists()


# -- access ------------------------------------------------------------------------------------

PAGES = [CHANGELIST, RANKING, LIVE, LIVE_DATA]


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_is_sent_to_the_login(client, page, fake_live):
    response = client.get(reverse(page))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("page", PAGES)
def test_non_staff_is_sent_to_the_login(non_staff, page, fake_live):
    response = non_staff.get(reverse(page))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("page", PAGES)
def test_staff_without_the_view_permission_is_refused(staff_without_permissions, page, fake_live):
    assert staff_without_permissions.get(reverse(page)).status_code == 403


# -- ranking page ------------------------------------------------------------------------------


def ranking(client, **params):
    response = client.get(reverse(RANKING), params)
    assert response.status_code == 200
    return response


def ranked_rooms(response) -> list[tuple[str, int]]:
    return [(row["report"].room, row["report"].reads) for row in response.context["articles"]]


@pytest.mark.parametrize("as_viewer", [False, True], ids=["superuser", "view-only staff"])
def test_ranking_periods(request, history, as_viewer):
    client = request.getfixturevalue("viewer" if as_viewer else "admin_client")
    evil_room = f"article:{history['evil'].pk}"
    plain_room = f"article:{history['plain'].pk}"

    assert ranked_rooms(ranking(client)) == [(evil_room, 3), (plain_room, 1)]  # default: 7 days
    assert ranked_rooms(ranking(client, period="24h")) == [(evil_room, 3)]
    assert ranked_rooms(ranking(client, period="7d")) == [(evil_room, 3), (plain_room, 1)]
    assert ranked_rooms(ranking(client, period="30d")) == [(evil_room, 3), (plain_room, 2)]

    day = (timezone.now() - timedelta(days=20)).date()
    custom = ranking(client, period="custom", since=str(day), until=str(day))
    assert ranked_rooms(custom) == [(plain_room, 1)]


def test_ranking_table_and_charts(admin_client, history):
    OnlinePeak.objects.create(date=timezone.now().date(), count=17, at=timezone.now())
    response = ranking(admin_client, period="30d")
    content = response.content.decode()

    evil = history["evil"]
    assert f'<a href="{evil.get_absolute_url()}">{EVIL_ESCAPED}</a>' in content
    assert "67%" in content  # completion of the hostile article: 2 of 3 at 0.9 or further
    assert "1\xa0min\xa005\xa0s" in content  # its median duration
    # A depth chart per article, its accessible name and bar tooltips escaped.
    assert content.count('class="presence-chart"') == 2 + 1  # two articles, one peaks chart
    assert f"<title>Where readers of “{EVIL_ESCAPED}” stopped</title>" in content
    assert "<title>90–100%: 2</title>" in content
    # Today's online peak in the 30-day chart.
    assert f"<title>{timezone.now().date():%m-%d}: 17</title>" in content
    assert EVIL not in content and "<script>alert" not in content


@pytest.mark.parametrize(
    "params",
    [
        {"period": "custom"},  # no dates
        {"period": "custom", "since": "2026-03-01"},
        {"period": "custom", "since": "not a date", "until": "2026-03-01"},
        {"period": "custom", "since": "2026-03-09", "until": "2026-03-01"},  # reversed
        {"period": "custom", "since": "2026-03-01", "until": "9999-12-31"},  # would overflow
        {"period": "custom", "since": "0001-01-01", "until": "2026-03-01"},
        {"period": "custom", "since": "2026-02-30", "until": "2026-03-01"},
        {"period": "forever"},
    ],
)
def test_ranking_bad_custom_range_shows_errors_not_500(admin_client, history, params):
    response = ranking(admin_client, **params)
    assert response.context["form"].errors
    assert response.context["articles"] == []
    assert 'class="errornote"' in response.content.decode()


def test_ranking_without_history(admin_client):
    response = ranking(admin_client)
    assert "No reading sessions in this period." in response.content.decode()
    assert "No data" in response.content.decode()  # the peaks chart, empty


# -- live page ---------------------------------------------------------------------------------


@pytest.mark.parametrize("as_viewer", [False, True], ids=["superuser", "view-only staff"])
def test_live_page_renders_the_numbers_escaped(request, fake_live, as_viewer):
    client = request.getfixturevalue("viewer" if as_viewer else "admin_client")
    response = client.get(reverse(LIVE))
    assert response.status_code == 200
    content = response.content.decode()
    assert '<span id="presence-online" aria-live="polite">42</span>' in content
    assert EVIL_ESCAPED in content and EVIL not in content
    assert "article:424242" in content  # a room without a title shows its name
    assert f'data-url="{reverse(LIVE_DATA)}"' in content
    # The page's one script is the app's own static file (no CDN), and it writes titles as text.
    assert re.findall(r'<script src="([^"]+)"', content.split('id="content-main"', 1)[1]) == [
        static("presence/live-admin.js")
    ]
    script = Path(finders.find("presence/live-admin.js")).read_text()
    assert "textContent" in script and "innerHTML" not in script


def test_live_data_json(admin_client, fake_live):
    response = admin_client.get(reverse(LIVE_DATA))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    data = response.json()
    assert data["online"] == 42
    assert data["rooms"][0] == fake_live[0]  # titles are data, sent as they are
    assert data["rooms"][1] == {"room": "article:424242", "count": 2, "title": "article:424242", "url": None}
    assert len(data["rooms"]) == 2


def test_live_with_the_real_store(admin_client):
    assert admin_client.get(reverse(LIVE)).status_code == 200
    data = admin_client.get(reverse(LIVE_DATA)).json()
    assert isinstance(data["online"], int) and isinstance(data["rooms"], list)


def test_live_store_outage(admin_client, monkeypatch):
    def down(*args, **kwargs):
        raise Unavailable("presence store unavailable, try again")

    monkeypatch.setattr(live, "online_count", down)
    response = admin_client.get(reverse(LIVE))
    assert response.status_code == 200
    assert "unavailable" in response.content.decode()
    response = admin_client.get(reverse(LIVE_DATA))
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"


# -- charts ------------------------------------------------------------------------------------


def test_bar_chart_escapes_and_is_accessible():
    svg = bar_chart_svg([3, 0, 1.5], [EVIL, "b", "c"], title=f"Depth of {EVIL}", width=300, height=100)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert 'role="img"' in svg
    assert f'aria-label="Depth of {EVIL_ESCAPED}"' in svg
    assert f"<title>Depth of {EVIL_ESCAPED}</title>" in svg
    assert f"<title>{EVIL_ESCAPED}: 3</title>" in svg
    assert "<title>c: 1.5</title>" in svg
    assert "<script" not in svg
    assert svg.count("<rect") == 3


def test_bar_chart_edge_cases():
    assert "No data" in bar_chart_svg([], [], title="Nothing")
    assert "No data" in bar_chart_svg([0, 0], ["a", "b"], title="Zeros")
    assert "NaN" not in bar_chart_svg([float("nan"), 2], ["a", "b"], title="Not a number")
    with pytest.raises(ValueError):
        bar_chart_svg([1], ["a", "b"], title="Mismatch")


def test_user_model_username_field_is_searched():
    from presence.admin import ReadingSessionAdmin

    assert f"user__{get_user_model().USERNAME_FIELD}" in ReadingSessionAdmin.search_fields


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (-3, "0 s"),
        (0.4, "0 s"),
        (42, "42 s"),
        (185, "3 min 05 s"),
        (3600, "1 h 00 min"),
        (7322, "2 h 02 min"),
    ],
)
def test_human_duration(seconds, text):
    from presence.admin import human_duration

    assert human_duration(seconds) == text.replace(" ", "\xa0")
