"""Template tags where a blog puts them: a footer that base.html includes (an included template
loads its own tags), or anywhere once the tags are builtins."""

from __future__ import annotations

import copy

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_the_included_footer_renders_the_live_count(client):
    page = client.get("/zh-hans/")
    footer = page.content.decode().split('<footer class="site-footer">', 1)[1].split("</footer>", 1)[0]
    assert "data-presence-online" in footer and "data-presence-text" in footer
    assert "0" in footer.split("data-presence-text", 1)[1]  # nobody online yet, rendered on the server


def test_builtins_make_the_tags_available_without_load():
    from django.conf import settings
    from django.template import engines

    templates = copy.deepcopy(settings.TEMPLATES)
    templates[0]["OPTIONS"]["builtins"] = ["presence.templatetags.presence"]  # README, "Templates"
    with override_settings(TEMPLATES=templates):
        footer = engines["django"].from_string("<footer>{% presence_online %}</footer>").render({})
    assert "data-presence-online" in footer
