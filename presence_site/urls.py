from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from presence import api_docs

urlpatterns = [
    path("admin/", admin.site.urls),
    # The demo account (demo/demo) exists only when DEBUG is on; say so on the form then.
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(extra_context={"demo_hint": settings.DEBUG}),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/presence/", include("presence.urls")),
    path("api/schema/", api_docs.SchemaView.as_view(), name="schema"),
    path("api/docs/", api_docs.DocsView.as_view(url_name="schema"), name="api-docs"),
    path("", include("blog.urls")),
]
