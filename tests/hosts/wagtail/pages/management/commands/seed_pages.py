"""``manage.py seed_pages``: the blog the tests and a person trying the host need, once.

A blog index as the site's root page and posts in every state a Wagtail blog has: live, draft,
scheduled (``go_live_at`` in the future), password-protected, and live with unpublished changes.
"""

from datetime import date, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from wagtail.coreutils import get_supported_content_language_variant
from wagtail.models import Locale, Page, PageViewRestriction, Site

from pages.models import BlogIndexPage, BlogPage

PARAGRAPH = (
    "<p>Readers arrive, scroll and leave; the markers beside this text follow them. This paragraph is "
    "repeated so that the post is long enough to scroll through on any screen, which is what the "
    "reading position is measured on.</p>"
)
BODY = PARAGRAPH * 40
PASSWORD = "open sesame"

# slug -> title, and what happens to the page after it is created as a draft.
POSTS = {
    "live-post": "A live post",
    "another-live-post": "Another live post",
    "draft-post": "A draft post",
    "scheduled-post": "A scheduled post",
    "private-post": "A password-protected post",
    "changed-post": "A post with unpublished changes",
}
DRAFT_TITLE = "Unpublished title of the changed post"


class Command(BaseCommand):
    help = "Create the blog index and its posts (live, draft, scheduled, password-protected, changed)."

    @transaction.atomic
    def handle(self, *args, **options):
        if BlogIndexPage.objects.exists():
            self.stdout.write("pages already seeded")
            return
        # What Wagtail's initial migration creates, for databases made without migrations (tests).
        Locale.objects.get_or_create(language_code=get_supported_content_language_variant(settings.LANGUAGE_CODE))
        root = Page.get_first_root_node() or Page.add_root(instance=Page(title="Root", slug="root"))
        site = Site.objects.filter(is_default_site=True).first()
        index = root.add_child(instance=BlogIndexPage(title="Blog", slug="blog", intro="<p>Posts, live.</p>"))
        if site is None:
            Site.objects.create(hostname="localhost", root_page=index, is_default_site=True)
        else:
            welcome, site.root_page = site.root_page, index
            site.save()
            welcome.delete()  # Wagtail's initial "Welcome" page

        today = date.today()
        for n, (slug, title) in enumerate(POSTS.items()):
            post = index.add_child(
                instance=BlogPage(
                    title=title, slug=slug, date=today - timedelta(days=n), intro=f"{title}.", body=BODY, live=False
                )
            )
            if slug == "draft-post":
                post.save_revision()
                continue
            if slug == "scheduled-post":
                post.go_live_at = timezone.now() + timedelta(days=30)
            post.save_revision().publish()
            if slug == "private-post":
                PageViewRestriction.objects.create(page=post, restriction_type=PageViewRestriction.PASSWORD,
                                                   password=PASSWORD)
            if slug == "changed-post":
                post.title = DRAFT_TITLE
                post.save_revision()
        self.stdout.write(f"seeded {len(POSTS)} posts under {index.url}")
