"""Fixtures of the Wagtail host, beside the shared ones (``tests/hosts/conftest.py``): its test
database seeded once (``manage.py seed_pages`` and four users), the seeded posts, session cookies
for Chromium.

Migrations are skipped (tables straight from the models, as pytest-django's ``--no-migrations``):
Wagtail's hundred-odd migrations would take most of the run's time; ``seed_pages`` creates what
Wagtail's initial migration would (root page, locale, default site), and ``test_site.py`` checks
that the host's migrations match its models.
"""

from __future__ import annotations

import os

import pytest

PASSWORD = "wagtail-host-password"


def pytest_configure(config):
    config.option.nomigrations = True


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The seeded blog and its users, committed: visible to every test and to server processes."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.core.management import call_command
    from wagtail.models import GroupPagePermission, Page

    with django_db_blocker.unblock():
        call_command("seed_pages", stdout=open(os.devnull, "w"))
        User = get_user_model()
        User.objects.create_superuser("admin", "admin@example.com", PASSWORD)
        # An editor: may use Wagtail's admin, edit pages and see the reading history (a group's view permission).
        editors = Group.objects.create(name="Readership editors")
        editors.permissions.add(
            Permission.objects.get(content_type__app_label="wagtailadmin", codename="access_admin"),
            Permission.objects.get(content_type__app_label="presence", codename="view_readingsession"),
        )
        root = Page.get_first_root_node()
        for codename in ("add_page", "change_page", "publish_page"):
            permission = Permission.objects.get(codename=codename)
            GroupPagePermission.objects.create(group=editors, page=root, permission=permission)
        User.objects.create_user("editor", "editor@example.com", PASSWORD).groups.add(editors)
        # A moderator: Wagtail's admin but not the history; a reader: no admin at all.
        moderators = Group.objects.create(name="Moderators")
        moderators.permissions.add(Permission.objects.get(codename="access_admin"))
        User.objects.create_user("moderator", "moderator@example.com", PASSWORD).groups.add(moderators)
        User.objects.create_user("reader", "reader@example.com", PASSWORD)


@pytest.fixture(scope="session")
def posts(django_db_setup, django_db_blocker) -> dict:
    """Seeded posts by slug: ``{"live-post": BlogPage, ...}``."""
    from pages.models import BlogPage

    with django_db_blocker.unblock():
        return {page.slug: page for page in BlogPage.objects.all()}


@pytest.fixture(scope="session")
def session_cookies(django_db_setup, django_db_blocker) -> dict[str, dict]:
    """A signed-in session cookie of each seeded user, by username, for browser contexts
    (``context.add_cookies([{**cookie, "url": server.base}])``). Made once, before any test's
    transaction opens, so that server processes see the sessions."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    cookies = {}
    with django_db_blocker.unblock():
        for user in get_user_model().objects.all():
            client = Client()
            client.force_login(user)
            cookies[user.get_username()] = {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
            }
    return cookies


@pytest.fixture
def server(host_server):
    """A Daphne of this host serving the seeded test database, on the in-memory store (counts start
    at zero whatever ``REDIS_URL`` the environment has)."""
    return host_server(REDIS_URL="")
