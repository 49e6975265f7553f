from django.conf.urls.i18n import i18n_patterns
from django.urls import include, path

from hostblog.admin import site

urlpatterns = [
    path("api/", include("articles.api_urls")),
    path("i18n/", include("django.conf.urls.i18n")),
]
urlpatterns += i18n_patterns(
    path("admin/", site.urls),
    # The blog's pages, `<slug>/` at the root of each language: a catch-all for one segment.
    path("", include("articles.urls")),
)

# README.md, "Add it to your blog", step 3: first, before any catch-all.
urlpatterns.insert(0, path("api/presence/", include("presence.urls")))
