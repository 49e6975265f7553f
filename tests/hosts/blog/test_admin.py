"""The reading history on the blog's own AdminSite (SimpleAdminConfig: no autodiscovery), through
``presence.admin.register(site)``."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

ADMIN = "/zh-hans/admin/presence/readingsession/"


@pytest.fixture
def staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("chief", "chief@example.com", "pw"))
    return client


def test_sessions_ranking_and_live_pages_answer_on_the_blogs_own_site(staff):
    from hostblog.admin import site

    changelist = staff.get(ADMIN)
    assert changelist.status_code == 200
    assert changelist.context["site_header"] == site.site_header  # the blog's site, not Django's default
    text = changelist.content.decode()
    assert f'href="{ADMIN}ranking/"' in text and f'href="{ADMIN}live/"' in text

    ranking = staff.get(ADMIN + "ranking/")
    assert ranking.status_code == 200
    assert 'href="/zh-hans/admin/"' in ranking.content.decode()  # breadcrumbs lead home to this site
    live = staff.get(ADMIN + "live/")
    assert live.status_code == 200 and live.context["online"] == 0
    assert staff.get(ADMIN + "live/data/").json() == {"online": 0, "rooms": []}
    assert staff.get("/zh-hans/admin/presence/onlinepeak/").status_code == 200
    assert "presence" in {app["app_label"] for app in staff.get("/zh-hans/admin/").context["app_list"]}


def test_readers_are_kept_out(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("visitor", "v@example.com", "pw"))
    assert client.get(ADMIN + "ranking/").status_code == 302  # to the blog's admin login


def test_the_blogs_chinese_admin_names_the_reading_history_in_chinese(staff):
    index = staff.get("/zh-hans/admin/").content.decode()
    assert "实时阅读" in index  # the app: "Live readership"
    assert "阅读会话" in index and "在线峰值" in index  # reading sessions, online peaks
    assert "结束原因" in staff.get(ADMIN).content.decode()  # the "end reason" column
