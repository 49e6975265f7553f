"""The host project itself: its migrations match its models (the tests build tables straight from
the models), and the system checks, the app's included, find nothing to report."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.test import override_settings

pytestmark = pytest.mark.django_db


@override_settings(MIGRATION_MODULES={})  # pytest-django's --no-migrations hides them otherwise
def test_the_pages_migrations_match_the_models():
    call_command("makemigrations", "pages", check=True, dry_run=True, verbosity=0)


@override_settings(DEBUG=True)  # as the site runs by default (one process, in-memory store)
def test_the_system_checks_are_clean():
    assert [f"{m.id}: {m.msg}" for m in run_checks(include_deployment_checks=False)] == []
