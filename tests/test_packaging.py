"""The distribution as a new user meets it: the wheel's files, a fresh virtualenv, and the README's
"Add it to your blog" blocks pasted into a new ``startproject`` project, up to the first page with
live numbers. The blocks are read from README.md (``<!-- readme-block: NAME -->``), never copied."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import websockets

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DEMO_PARTS = ("blog/", "presence_site/", "templates/", "tests/", "bench/", "deploy/", "docs/", "manage.py")
BLOCKS = {"settings", "settings-redis", "asgi", "urls", "template-article", "template-footer", "template-builtins",
          "admin"}


def readme_blocks() -> dict[str, str]:
    found = re.findall(r"<!-- readme-block: ([\w-]+) -->\n```\w*\n(.*?)\n```", README.read_text(), re.S)
    return dict(found)


def test_the_readme_has_every_block_and_the_projects_asgi_py_is_the_readmes():
    blocks = readme_blocks()
    assert set(blocks) == BLOCKS
    for project, path in (("presence_site", ROOT / "presence_site/asgi.py"),
                          ("hostblog", ROOT / "tests/hosts/blog/hostblog/asgi.py")):
        assert path.read_text() == blocks["asgi"].replace("mysite", project) + "\n", path


# -- the wheel -----------------------------------------------------------------------------------


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(ROOT), "-q"], ROOT)
    (found,) = out.glob("django_live_readership-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_carries_the_app_and_nothing_of_the_demo(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    on_disk = {
        path.relative_to(ROOT).as_posix() for path in (ROOT / "presence").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert on_disk - names == set(), "files of the app missing from the wheel"
    for required in ("presence/templates/presence/script.html", "presence/templates/admin/presence/readingsession/"
                     "ranking.html", "presence/static/presence/presence.js", "presence/static/presence/presence.css",
                     "presence/migrations/0001_initial.py", "presence/templatetags/presence.py", "presence/layers.py"):
        assert required in names
    catalogues = {name for name in names if name.startswith("presence/locale/")}
    assert any(n.endswith(".po") for n in catalogues) and any(n.endswith(".mo") for n in catalogues)
    assert not [name for name in names if name.startswith(DEMO_PARTS)]
    metadata = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py3')[0]}.dist-info/METADATA").decode()
    assert "Name: django-live-readership" in metadata and "Version: 0.3.0" in metadata
    assert "Requires-Python: >=3.11" in metadata
    requires = {name.lower() for name in re.findall(r"^Requires-Dist: (\S+?)[<>=!]", metadata, re.M)}
    assert {"django", "channels", "channels-redis", "daphne", "djangorestframework", "drf-spectacular",
            "redis"} <= requires
    assert not re.search(r"^Requires-Dist: \S+==", metadata, re.M), "ranges, not pins"


class Venv(type(Path())):
    seconds: float = 0.0


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Venv:
    """A new virtualenv with the wheel installed by pip (dependencies resolved from its ranges);
    how long that took is ``seconds``."""
    started = time.monotonic()
    venv = Venv(tmp_path_factory.mktemp("fresh") / "venv")
    run([sys.executable, "-m", "venv", str(venv)], ROOT)
    run([str(venv / "bin/python"), "-m", "pip", "install", "-q", str(wheel)], venv.parent)
    run([str(venv / "bin/python"), "-m", "pip", "check"], venv.parent)
    venv.seconds = time.monotonic() - started
    return venv


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what points at the repository or the demo."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "DJANGO_SETTINGS_MODULE", "DATABASE_URL",
                                                            "REDIS_URL", "VIRTUAL_ENV"}}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_the_app_loads(fresh_venv, tmp_path):
    script = """
import django, presence
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.staticfiles",
                    "rest_framework", "channels", "presence"],
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
    STATIC_URL="/static/",
)
django.setup()
from django.contrib.staticfiles import finders
from django.db.migrations.loader import MigrationLoader
from django.template.loader import get_template
get_template("presence/script.html")
print(presence.__file__)
print(finders.find("presence/presence.js"))
loader = MigrationLoader(None, ignore_no_migrations=True)
print(sorted(name for app, name in loader.disk_migrations if app == "presence"))
"""
    out = run([str(fresh_venv / "bin/python"), "-P", "-c", script], tmp_path, env=clean_env()).splitlines()
    assert out[0].startswith(str(fresh_venv)) and out[1].startswith(str(fresh_venv))
    assert "0001_initial" in out[2]


# -- a new user, step by step ----------------------------------------------------------------------

ARTICLE_MODEL = '''from django.db import models
from django.urls import reverse


class Article(models.Model):
    title = models.CharField(max_length=200)
    slug = models.SlugField(unique=True)
    body = models.TextField()

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse("article", args=[self.slug])
'''
ARTICLE_VIEW = '''from django.shortcuts import get_object_or_404, render

from blog.models import Article


def article(request, slug):
    return render(request, "blog/article.html", {"article": get_object_or_404(Article, slug=slug)})
'''


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text + "\n")


@pytest.mark.slow
@pytest.mark.processes
def test_a_new_user_gets_live_numbers_by_following_the_readme(fresh_venv, tmp_path):
    started = time.monotonic()
    blocks = readme_blocks()
    bin_ = fresh_venv / "bin"
    project = tmp_path / "site"
    project.mkdir()
    env = clean_env()
    python = [str(bin_ / "python")]  # in a folder outside the repository: its own on sys.path

    def manage(*args: str) -> str:
        return run([*python, "manage.py", *args], project, env=env)

    # The user's blog: a new project and an app with an article model and its page.
    run([str(bin_ / "django-admin"), "startproject", "mysite", "."], project, env=env)
    manage("startapp", "blog")
    (project / "blog/models.py").write_text(ARTICLE_MODEL)
    (project / "blog/views.py").write_text(ARTICLE_VIEW)
    append(project / "mysite/settings.py", 'INSTALLED_APPS += ["blog"]')
    append(project / "mysite/urls.py", 'from blog.views import article\n\n'
                                       'urlpatterns.append(path("articles/<slug:slug>/", article, name="article"))')
    # The README, as written.
    append(project / "mysite/settings.py", blocks["settings"])
    (project / "mysite/asgi.py").write_text(blocks["asgi"] + "\n")
    append(project / "mysite/urls.py", blocks["urls"])
    templates = project / "blog/templates"
    (templates / "blog").mkdir(parents=True)
    (templates / "blog/article.html").write_text(blocks["template-article"] + "\n")
    (templates / "footer.html").write_text(blocks["template-footer"] + "\n")
    # The Redis variant and the builtins line only have to pass the checks (nothing connects).
    redis_settings = ["from mysite.settings import *  # noqa", blocks["settings-redis"], blocks["template-builtins"]]
    (project / "mysite/settings_redis.py").write_text("\n\n".join(redis_settings) + "\n")

    manage("makemigrations", "blog", "-v", "0")
    manage("migrate", "-v", "0")
    manage("shell", "-c", "from blog.models import Article; "
                          "Article.objects.create(title='Hello', slug='hello', body='Words. ' * 400)")
    for settings_module in ("mysite.settings", "mysite.settings_redis"):
        checked = run([*python, "manage.py", "check", "--settings", settings_module], project, env=env)
        assert "presence." not in checked and "no issues" in checked, checked

    port = free_port()
    log = tmp_path / "daphne.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(bin_ / "daphne"), "-b", "127.0.0.1", "-p", str(port), "mysite.asgi:application"],
                                  cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while f"Listening on TCP address 127.0.0.1:{port}" not in log.read_text():
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        page = urllib.request.urlopen(f"{base}/articles/hello/", timeout=10).read().decode()
        # Server-rendered numbers: nobody online, nobody reading this article yet.
        assert re.search(r"data-presence-online.*?data-presence-text[^>]*>\s*0 readers online", page, re.S), page
        assert re.search(r'data-presence-room="article:hello".*?>\s*0 people reading now', page, re.S), page
        script = re.search(r'src="([^"]*presence\.js)"', page).group(1)
        assert urllib.request.urlopen(base + script, timeout=10).status == 200

        async def hello() -> dict:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/presence/?session=newuser0000001",
                                          origin=base, open_timeout=10) as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), 10))

        first = asyncio.run(hello())
        assert first["type"] == "hello" and first["online"] == 1, first
    finally:
        server.terminate()
        server.wait(15)
    steps = time.monotonic() - started
    print(f"\nnew user: fresh venv + pip install {fresh_venv.seconds:.1f} s, project to live numbers {steps:.1f} s, "
          f"total {fresh_venv.seconds + steps:.1f} s")
