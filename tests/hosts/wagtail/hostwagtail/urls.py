"""Wagtail's admin, the presence API, then Wagtail's page tree: its catch-all comes last, as it
answers every path (``presence.W0..`` "URLs shadowed" warns when ``api/presence/`` comes after it)."""

from django.urls import include, path
from wagtail import urls as wagtail_urls
from wagtail.admin import urls as wagtailadmin_urls
from wagtail.documents import urls as wagtaildocs_urls

urlpatterns = [
    path("admin/", include(wagtailadmin_urls)),
    path("documents/", include(wagtaildocs_urls)),
    path("api/presence/", include("presence.urls")),
    path("", include(wagtail_urls)),
]
