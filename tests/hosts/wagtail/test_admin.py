"""The reading history in Wagtail's admin (``presence/wagtail_hooks.py``): a "Reading" menu with the
ranking, the live page and the reading sessions, for users who may view reading sessions.

The host has no ``django.contrib.admin``: these pages are all its staff get.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from presence.models import OnlinePeak, ReadingSession

pytestmark = pytest.mark.django_db

RANKING, LIVE, SESSIONS = "/admin/reading/ranking/", "/admin/reading/live/", "/admin/reading/sessions/"
PAGES = [RANKING, LIVE, f"{LIVE}data/", SESSIONS]
MENU = ["Reading ranking", "Live now", "Reading sessions"]


def signed_in(client, username: str):
    client.force_login(get_user_model().objects.get(username=username))
    return client


@pytest.fixture
def history(posts):
    """Four sessions of the last hours: three of the live post by two readers, one of the changed post."""
    now = timezone.now()
    live, changed = posts["live-post"], posts["changed-post"]
    user = get_user_model().objects.get(username="reader")
    rows = [
        # room, reader, user, minutes ago, seconds read, furthest position, end reason
        (live, "a" * 24, None, 90, 60, 0.95, "left"),
        (live, "a" * 24, None, 60, 120, 0.5, "closed"),
        (live, "b" * 24, user, 30, 300, 1.0, ""),
        (changed, "c" * 24, None, 20, 10, 0.1, "timeout"),
    ]
    for page, reader, who, ago, seconds, furthest, reason in rows:
        started = now - timedelta(minutes=ago)
        ReadingSession.objects.create(
            room=f"post:{page.pk}", object_id=str(page.pk), title=page.title, reader_id=reader, user=who,
            name="Ada" if who is None else "", started_at=started,
            ended_at=None if reason == "" else started + timedelta(seconds=seconds), duration_seconds=seconds,
            furthest_position=furthest, last_position=furthest, end_reason=reason, process="test",
        )
    OnlinePeak.objects.create(date=now.date(), count=7, at=now)
    return rows


def test_an_editor_who_prefers_german_reads_the_history_in_german(client, history):
    from wagtail.users.models import UserProfile

    profile = UserProfile.get_for_user(get_user_model().objects.get(username="editor"))
    profile.preferred_language = "de"
    profile.save()
    html = signed_in(client, "editor").get(SESSIONS).content.decode()
    assert "Lesesitzungen" in html  # the page: "Reading sessions"
    headers = [" ".join(re.sub(r"<[^>]+>", " ", th).split()) for th in re.findall(r"<th\b.*?</th>", html, re.S)]
    for column in ("Artikel", "Leser", "Name", "Begonnen", "Dauer", "Weiteste Stelle", "Endegrund"):
        assert any(column in header for header in headers), (column, headers)


@pytest.mark.parametrize("username", ["admin", "editor"])
def test_the_reading_menu_is_shown_to_who_may_view_reading_sessions(client, username):
    html = signed_in(client, username).get("/admin/").content.decode()
    for label in MENU:
        assert label in html
    for url in (RANKING, LIVE, SESSIONS):
        assert url in html


def test_the_reading_menu_is_hidden_from_other_wagtail_users(client):
    response = signed_in(client, "moderator").get("/admin/")
    assert response.status_code == 200
    html = response.content.decode()
    assert not any(label in html for label in MENU)
    for url in PAGES:
        # Wagtail's answer to a permission denied in its admin: back to the dashboard, with a message.
        response = client.get(url, follow=True)
        assert response.redirect_chain == [("/admin/", 302)], url
        assert "Sorry, you do not have permission to access this area." in response.content.decode()


@pytest.mark.parametrize("username", [None, "reader"])
def test_people_without_wagtail_access_are_sent_to_its_login(client, username):
    if username:
        signed_in(client, username)
    for url in PAGES:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url


def test_the_ranking_shows_the_periods_numbers_and_charts(client, history, posts):
    response = signed_in(client, "editor").get(RANKING, {"period": "24h"})
    assert response.status_code == 200
    rows = [(r["report"].title, r["report"].reads, r["report"].unique_readers, r["median"], r["completion"])
            for r in response.context["articles"]]
    assert rows == [
        ("A live post", 3, 2, "2\N{NO-BREAK SPACE}min\N{NO-BREAK SPACE}00\N{NO-BREAK SPACE}s", "67%"),
        ("A post with unpublished changes", 1, 1, "10\N{NO-BREAK SPACE}s", "0%"),
    ]
    html = response.content.decode()
    assert "Where readers of “A live post” stopped" in html  # the read-depth chart (SVG)
    assert "90–100%: 2" in html  # two of its three reads got past 90 %
    assert f"{timezone.localdate():%m-%d}: 7" in html  # today's online peak in the peaks chart
    assert f'{SESSIONS}?room=post%3A{posts["live-post"].pk}' in html


def test_the_ranking_links_articles_to_their_pages(client, history, posts):
    html = signed_in(client, "editor").get(RANKING, {"period": "24h"}).content.decode()
    assert f'<a href="{posts["live-post"].url}">A live post</a>' in html
    assert f'<a href="{posts["changed-post"].url}">A post with unpublished changes</a>' in html


def test_a_bad_period_is_explained_not_a_500(client, history):
    response = signed_in(client, "editor").get(RANKING, {"period": "custom", "since": "2026-02-30"})
    assert response.status_code == 200
    assert response.context["form"].errors.keys() == {"since", "until"}
    assert "Please correct the errors above." in response.content.decode()


def test_the_live_page_and_its_data(client):
    signed_in(client, "editor")
    assert client.get(LIVE).status_code == 200
    data = client.get(f"{LIVE}data/")
    assert data.json() == {"online": 0, "rooms": []}
    assert "no-store" in data["Cache-Control"]


def test_reading_sessions_are_listed_filtered_and_searched(client, history, posts):
    signed_in(client, "editor")

    def listed(**query) -> list[tuple[str, str]]:
        response = client.get(SESSIONS, query)
        assert response.status_code == 200
        return sorted((s.title, s.reader_id) for s in response.context["object_list"])

    assert len(listed()) == 4
    assert listed(room=f"post:{posts['changed-post'].pk}") == [("A post with unpublished changes", "c" * 24)]
    assert listed(reader="user") == [("A live post", "b" * 24)]
    assert listed(end_reason="open") == [("A live post", "b" * 24)]
    assert len(listed(end_reason="left")) == 1
    assert listed(q="unpublished") == [("A post with unpublished changes", "c" * 24)]
    assert len(listed(q="Ada")) == 3
    html = client.get(SESSIONS).content.decode()
    assert "2\N{NO-BREAK SPACE}min\N{NO-BREAK SPACE}00\N{NO-BREAK SPACE}s" in html and "95%" in html


def test_reading_sessions_are_read_only(client, history):
    signed_in(client, "admin")
    session = ReadingSession.objects.get(reader_id="b" * 24)
    detail = client.get(f"{SESSIONS}inspect/{session.pk}/")
    assert detail.status_code == 200 and "A live post" in detail.content.decode()
    for path in ("new/", f"edit/{session.pk}/", f"delete/{session.pk}/", f"copy/{session.pk}/"):
        assert client.get(SESSIONS + path).status_code == 404, path
    assert "/new/" not in client.get(SESSIONS).content.decode()


def test_wagtails_group_editor_offers_the_view_permission_only(client):
    from django.contrib.auth.models import Group, Permission

    group = Group.objects.get(name="Moderators")
    html = signed_in(client, "admin").get(f"/admin/groups/edit/{group.pk}/").content.decode()
    checkboxes = set(re.findall(r'<input[^>]*name="permissions"[^>]*value="(\d+)"', html))
    permissions = Permission.objects.filter(content_type__app_label="presence", content_type__model="readingsession")
    offered = {permission.codename for permission in permissions if str(permission.pk) in checkboxes}
    assert offered == {"view_readingsession"}
