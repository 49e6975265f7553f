"""The mistake the check catches: ``api/presence/`` included after Wagtail's catch-all."""

from django.urls import include, path
from wagtail import urls as wagtail_urls
from wagtail.admin import urls as wagtailadmin_urls

urlpatterns = [
    path("admin/", include(wagtailadmin_urls)),
    path("", include(wagtail_urls)),
    path("api/presence/", include("presence.urls")),
]
