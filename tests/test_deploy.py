"""Django's deployment checks: with production settings, ``manage.py check --deploy``
reports exactly the checks README's "Deploying" section explains, and nothing when the operator
opts in to them; with DEBUG on (``make run``), plain http keeps working.

Each case is one ``manage.py`` subprocess with the settings in its environment.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK_ID = re.compile(r"^\?: \(([\w.]+)\)", re.MULTILINE)


def site_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh process: none of the caller's site settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "SESSION_", "CSRF_", "DJANGO_"))}
    for name in ("DEBUG", "SECRET_KEY", "REDIS_URL", "DATABASE_URL", "ALLOWED_HOSTS"):
        env.pop(name, None)
    env.update(extra)
    return env


def production_env(**extra: str) -> dict[str, str]:
    return site_env(
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(48),  # 64 random characters
        REDIS_URL="redis://127.0.0.1:6379/0",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/test",
        ALLOWED_HOSTS="blog.example.com",
        **extra,
    )


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def documented_checks() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Deploying\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `([\w.]+)`:", section, re.MULTILINE))


def test_check_deploy_reports_only_what_the_readme_explains():
    documented = documented_checks()
    assert documented == {"security.W005", "security.W021"}
    done = manage(production_env(), "check", "--deploy")
    assert done.returncode == 0, done.stdout + done.stderr
    reported = set(CHECK_ID.findall(done.stdout + done.stderr))
    assert reported == documented, done.stdout + done.stderr


def test_check_deploy_is_silent_once_the_operator_opts_in():
    env = production_env(SECURE_HSTS_INCLUDE_SUBDOMAINS="1", SECURE_HSTS_PRELOAD="1", SECURE_HSTS_SECONDS="31536000")
    done = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_debug_on_keeps_plain_http():
    code = (
        "from django.conf import settings as s; "
        "print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS)"
    )
    done = manage(site_env(), "shell", "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split() == ["True", "False", "False", "False", "0"]
    done = manage(production_env(), "shell", "-c", code)
    assert done.stdout.splitlines()[-1].split() == ["False", "True", "True", "True", "86400"], done.stderr
