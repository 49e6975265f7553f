"""A blog as Wagtail pages: an index and its posts (no ``get_absolute_url``, as Wagtail pages have none)."""

from django.db import models
from wagtail.admin.panels import FieldPanel
from wagtail.fields import RichTextField
from wagtail.models import Page


class BlogIndexPage(Page):
    intro = RichTextField(blank=True)

    content_panels = [*Page.content_panels, FieldPanel("intro")]
    subpage_types = ["pages.BlogPage"]

    def get_context(self, request, *args, **kwargs):
        context = super().get_context(request, *args, **kwargs)
        context["posts"] = BlogPage.objects.child_of(self).live().public().order_by("-date", "title")
        return context


class BlogPage(Page):
    date = models.DateField("post date")
    intro = models.CharField(max_length=250, blank=True)
    body = RichTextField(blank=True)

    content_panels = [*Page.content_panels, FieldPanel("date"), FieldPanel("intro"), FieldPanel("body")]
    parent_page_types = ["pages.BlogIndexPage"]
    subpage_types = []
