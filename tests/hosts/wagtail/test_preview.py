"""Previews join no room: Wagtail's preview views (``request.is_preview``) and a page a view marks as
a preview (context variable ``presence_preview``) render the server's numbers but no client.

Django's client drives Wagtail's real views as an editor; ``test_browser.py`` checks in Chromium
that such a page opens no WebSocket.
"""

from __future__ import annotations

import pytest
from django.template import Context, Template
from wagtail.test.utils.form_data import inline_formset, nested_form_data, rich_text

pytestmark = pytest.mark.django_db

CLIENT = 'id="presence-config"'


def assert_no_client(html: str) -> None:
    assert CLIENT not in html
    assert "presence/presence.js" not in html


@pytest.fixture
def editor(client):
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.get(username="editor"))
    return client


def test_the_published_page_loads_the_client_with_its_room(client, posts):
    html = client.get(posts["live-post"].url).content.decode()
    assert CLIENT in html
    assert f'"room": "post:{posts["live-post"].pk}"' in html


@pytest.mark.parametrize("slug", ["live-post", "changed-post", "draft-post"])
def test_view_draft_renders_the_numbers_but_no_client(editor, posts, slug):
    response = editor.get(f"/admin/pages/{posts[slug].pk}/view_draft/")
    assert response.status_code == 200
    html = response.content.decode()
    assert posts[slug].draft_title in html  # it is the preview of the latest revision
    assert "readers online" in html  # the server's numbers
    if slug != "draft-post":  # a published page's readers (a draft has none: it is no room)
        assert "data-presence-readers" in html and "0 people reading now" in html
    assert_no_client(html)


def test_live_preview_while_editing_renders_no_client(editor, posts):
    """The editor's side panel: the edit form is posted to the preview view, which then renders it."""
    page = posts["live-post"]
    url = f"/admin/pages/{page.pk}/edit/preview/"
    form = nested_form_data(
        {
            "title": "Title typed in the editor",
            "slug": page.slug,
            "date": page.date.isoformat(),
            "intro": page.intro,
            "body": rich_text("<p>Edited body.</p>"),
            "comments": inline_formset([]),
        }
    )
    assert editor.post(url, form).json() == {"is_valid": True, "is_available": True}
    html = editor.get(url).content.decode()
    assert "Title typed in the editor" in html
    assert "data-presence-readers" in html
    assert_no_client(html)


def test_a_view_marks_its_page_as_a_preview_with_presence_preview(posts, rf):
    template = Template("{% load presence %}{% presence_script room=page %}{% presence_readers page %}")
    page = posts["live-post"]
    normal = template.render(Context({"page": page, "request": rf.get("/")}))
    preview = template.render(Context({"page": page, "request": rf.get("/"), "presence_preview": True}))
    assert CLIENT in normal
    assert_no_client(preview)
    assert "0 people reading now" in preview
