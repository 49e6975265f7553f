"""Admin for the reading history: read-only changelists, a ranking page, a live page.

History is evidence: nobody adds or edits it here; staff with the delete permission may
delete rows (e.g. on a reader's request). Registered on Django's default ``admin.site``;
a project with its own ``AdminSite`` calls ``register(site)``.
"""

from __future__ import annotations

import logging

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from presence.dashboard import (
    LIVE_LIMIT,
    LIVE_REFRESH_SECONDS,
    PEAK_DAYS,
    article_choices,
    human_duration,
    live_numbers,
    peaks_chart,
    percent,
    ranking_form,
    ranking_rows,
)
from presence.errors import Unavailable
from presence.models import OnlinePeak, ReadingSession

logger = logging.getLogger(__name__)


class ArticleFilter(admin.SimpleListFilter):
    """Rooms that have history, named by the latest title each was read under."""

    title = _("article")
    parameter_name = "room"

    def lookups(self, request, model_admin):
        return article_choices()

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(room=self.value())
        return queryset


class SignedInFilter(admin.SimpleListFilter):
    title = _("reader")
    parameter_name = "reader"

    def lookups(self, request, model_admin):
        return [("user", _("Signed in")), ("anonymous", _("Anonymous"))]

    def queryset(self, request, queryset):
        if self.value() == "user":
            return queryset.filter(user__isnull=False)
        if self.value() == "anonymous":
            return queryset.filter(user__isnull=True)
        return queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """No adding, no editing; deleting follows the delete permission."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ReadingSessionAdmin(ReadOnlyAdmin):
    list_display = ["article", "reader", "name", "started_at", "duration", "furthest", "end_reason"]
    list_filter = ["started_at", ArticleFilter, SignedInFilter, "end_reason"]
    search_fields = ["title", "name", f"user__{get_user_model().USERNAME_FIELD}"]
    date_hierarchy = "started_at"
    list_select_related = ["user"]
    change_list_template = "admin/presence/readingsession/change_list.html"

    @admin.display(description=_("article"), ordering="title")
    def article(self, obj: ReadingSession) -> str:
        return obj.title or obj.room

    @admin.display(description=_("reader"))
    def reader(self, obj: ReadingSession) -> str:
        return obj.user.get_username() if obj.user is not None else obj.reader_id

    @admin.display(description=_("duration"), ordering="duration_seconds")
    def duration(self, obj: ReadingSession) -> str:
        return human_duration(obj.duration_seconds)

    @admin.display(description=_("furthest"), ordering="furthest_position")
    def furthest(self, obj: ReadingSession) -> str:
        return percent(obj.furthest_position)

    # -- extra pages ----------------------------------------------------------------------

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        extra = [
            path("ranking/", wrap(self.ranking_view), name=f"{prefix}_ranking"),
            path("live/", wrap(self.live_view), name=f"{prefix}_live"),
            path("live/data/", wrap(self.live_data_view), name=f"{prefix}_live_data"),
        ]
        return extra + super().get_urls()

    def _page_context(self, request: HttpRequest, title: str) -> dict:
        if not self.has_view_permission(request):
            raise PermissionDenied
        # The templates' `admin:` URLs then name this page's site, not Django's default one.
        request.current_app = self.admin_site.name
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "has_view_permission": True,
        }

    def ranking_view(self, request: HttpRequest) -> HttpResponse:
        context = self._page_context(request, _("Reading ranking"))
        form = ranking_form(request.GET)
        articles = []
        since = until = None
        if form.is_valid():
            since, until = form.bounds(timezone.now())
            articles = ranking_rows(since, until)
        context.update(
            form=form,
            since=since,
            until=until,
            articles=articles,
            peaks_svg=peaks_chart(),
            peak_days=PEAK_DAYS,
        )
        return TemplateResponse(request, "admin/presence/readingsession/ranking.html", context)

    def live_view(self, request: HttpRequest) -> HttpResponse:
        context = self._page_context(request, _("Live now"))
        try:
            numbers = live_numbers()
        except Unavailable:
            logger.warning("live admin page: presence store unavailable", exc_info=True)
            numbers = {"online": None, "rooms": [], "unavailable": True}
        context.update(numbers, refresh_seconds=LIVE_REFRESH_SECONDS, limit=LIVE_LIMIT)
        return TemplateResponse(request, "admin/presence/readingsession/live.html", context)

    def live_data_view(self, request: HttpRequest) -> JsonResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            return JsonResponse(live_numbers())  # admin_view adds the no-cache headers
        except Unavailable as exc:
            return JsonResponse({"error": exc.code, "message": exc.message}, status=503)


class OnlinePeakAdmin(ReadOnlyAdmin):
    list_display = ["date", "count", "at"]
    date_hierarchy = "date"


def register(site: admin.AdminSite) -> None:
    """Put the reading history (sessions, online peaks, the ranking and live pages) on ``site``:
    a project's own ``AdminSite``, e.g. one without autodiscovery (``SimpleAdminConfig``).
    Registering twice on one site is harmless."""
    for model, model_admin in ((ReadingSession, ReadingSessionAdmin), (OnlinePeak, OnlinePeakAdmin)):
        if not site.is_registered(model):
            site.register(model, model_admin)


register(admin.site)
