"""The blog, set up as the README says, passes the app's system checks, with DEBUG on and off,
on one process and on Redis: no check cries wolf on a real-shaped site."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow]


@pytest.mark.parametrize("redis", [False, True], ids=["one process", "redis"])
def test_the_blog_passes_the_presence_checks(manage_py, redis):
    env = {"DEBUG": "1"}
    if redis:
        env["REDIS_URL"] = "redis://127.0.0.1:6379/0"  # checks only: nothing connects
    output = manage_py("check", env=env)
    assert "presence." not in output and "System check identified no issues" in output, output
