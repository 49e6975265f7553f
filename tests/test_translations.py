"""The app's catalogues (presence/locale/) say every text of the app, and what Django loads is what
they say: a string added to a template, a model or the Wagtail menu without a translation shows
English in a Chinese, German or French admin."""

from __future__ import annotations

import gettext
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "presence"
LANGUAGES = sorted(p.name for p in (APP / "locale").iterdir() if (p / "LC_MESSAGES" / "django.po").exists())

pytestmark = pytest.mark.skipif(shutil.which("xgettext") is None, reason="GNU gettext is not installed")


def entries(po: Path) -> dict[str, tuple[str, bool]]:
    """msgid -> (msgstr, fuzzy) of a catalogue, plural forms joined, the header left out."""
    found = {}
    for block in po.read_text(encoding="utf-8").split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith("#~")]
        fuzzy = any(line.startswith("#,") and "fuzzy" in line for line in lines)
        fields: dict[str, str] = {}
        key = None
        for line in lines:
            if line.startswith("#"):
                continue
            if line.startswith('"'):
                fields[key] += line[1:-1]
            else:
                key, _, value = line.partition(" ")
                fields[key] = value[1:-1]
        if fields.get("msgid"):
            msgid = fields["msgid"] + ("\0" + fields["msgid_plural"] if "msgid_plural" in fields else "")
            found[msgid] = ("\0".join(v for k, v in fields.items() if k.startswith("msgstr")), fuzzy)
    return found


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> dict[str, dict]:
    """The catalogues ``makemessages`` makes from the app's source today, per language."""
    copy = tmp_path_factory.mktemp("app") / "presence"
    shutil.copytree(APP, copy, ignore=shutil.ignore_patterns("__pycache__", "*.mo"))
    args = [sys.executable, "-m", "django", "makemessages", "--no-obsolete", "--no-location"]
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}  # the app alone
    for lang in LANGUAGES:
        args += ["-l", lang]
    subprocess.run(args, cwd=copy, env=env, check=True, capture_output=True)
    return {lang: entries(copy / "locale" / lang / "LC_MESSAGES" / "django.po") for lang in LANGUAGES}


def test_there_are_catalogues():
    assert {"de", "fr", "zh_Hans"} <= set(LANGUAGES)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_text_of_the_app_is_translated(extracted, language):
    # ``extracted`` kept the committed translations (makemessages merges them): what is missing
    # there is a text the committed catalogue lacks, or holds only as a fuzzy guess.
    missing = sorted(msgid for msgid, (msgstr, fuzzy) in extracted[language].items() if fuzzy or not msgstr.strip("\0"))
    assert missing == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_compiled_catalogue_says_what_the_source_catalogue_says(language):
    folder = APP / "locale" / language / "LC_MESSAGES"
    with (folder / "django.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)._catalog
    for msgid, (msgstr, fuzzy) in entries(folder / "django.po").items():
        if fuzzy:
            continue
        if "\0" in msgid:
            forms = msgstr.split("\0")
            assert [compiled.get((msgid.split("\0")[0], n)) for n in range(len(forms))] == forms, msgid
        else:
            assert compiled.get(msgid) == msgstr, msgid
