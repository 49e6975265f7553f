"""Admin for the reading history: read-only changelists, a ranking page, a live page.

History is evidence: nobody adds or edits it here; staff with the delete permission may
delete rows (e.g. on a reader's request). Registered on Django's default ``admin.site``;
a project with its own ``AdminSite`` calls ``register(site)``.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Max, OuterRef, Subquery
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from presence import live, reports
from presence.charts import bar_chart_svg
from presence.errors import Unavailable
from presence.models import OnlinePeak, ReadingSession

logger = logging.getLogger(__name__)

LIVE_LIMIT = 20
LIVE_REFRESH_SECONDS = 5
PEAK_DAYS = 30
DEPTH_LABELS = [f"{i * 10}–{(i + 1) * 10}%" for i in range(reports.DEPTH_BUCKETS)]


def human_duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: reading times at a glance (no-break spaces,
    so a narrow column never splits a number from its unit)."""
    if seconds is None:
        return "—"
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        text = f"{hours} h {minutes:02d} min"
    elif minutes:
        text = f"{minutes} min {secs:02d} s"
    else:
        text = f"{secs} s"
    return text.replace(" ", "\N{NO-BREAK SPACE}")


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


class ArticleFilter(admin.SimpleListFilter):
    """Rooms that have history, named by the latest title each was read under."""

    title = _("article")
    parameter_name = "room"

    def lookups(self, request, model_admin):
        latest_title = (
            ReadingSession.objects.filter(room=OuterRef("room"))
            .exclude(title="")
            .order_by("-started_at")
            .values("title")[:1]
        )
        rows = (
            ReadingSession.objects.order_by()
            .values("room")
            .annotate(last=Max("started_at"))
            .annotate(latest_title=Subquery(latest_title))
        )
        choices = [(row["room"], row["latest_title"] or row["room"]) for row in rows]
        return sorted(choices, key=lambda choice: (str(choice[1]).casefold(), choice[0]))

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


class RankingPeriodForm(forms.Form):
    PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}

    period = forms.ChoiceField(
        label=_("Period"),
        choices=[
            ("24h", _("Last 24 hours")),
            ("7d", _("Last 7 days")),
            ("30d", _("Last 30 days")),
            ("custom", _("Custom")),
        ],
        required=False,
    )
    since = forms.DateField(label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label=_("To (inclusive)"), required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        period = data.get("period") or "7d"
        data["period"] = period
        if period != "custom":
            return data
        since, until = data.get("since"), data.get("until")
        if "since" not in self.errors and since is None:
            self.add_error("since", _("Choose the first day of the period."))
        if "until" not in self.errors and until is None:
            self.add_error("until", _("Choose the last day of the period."))
        if since and until:
            if since > until:
                raise ValidationError(_("The first day must not be after the last day."), code="reversed")
            # Keep the period's ends representable as datetimes in any time zone.
            if since < date(1900, 1, 1):
                self.add_error("since", _("Choose a later day."))
            if until >= date.max - timedelta(days=1):
                self.add_error("until", _("Choose an earlier day."))
        return data

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """``[since, until)`` of the chosen period; call on a valid form."""
        period = self.cleaned_data["period"]
        if period in self.PERIODS:
            return now - self.PERIODS[period], now
        since = datetime.combine(self.cleaned_data["since"], time.min)
        until = datetime.combine(self.cleaned_data["until"] + timedelta(days=1), time.min)
        if not settings.USE_TZ:  # stored datetimes are naive, in TIME_ZONE: compare like with like
            return since, until
        zone = timezone.get_current_timezone()
        return since.replace(tzinfo=zone), until.replace(tzinfo=zone)


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
        form = RankingPeriodForm(request.GET if "period" in request.GET else {"period": "7d"})
        articles = []
        since = until = None
        if form.is_valid():
            since, until = form.bounds(timezone.now())
            for report in reports.article_ranking(since, until):
                articles.append(
                    {
                        "report": report,
                        "median": human_duration(report.median_seconds),
                        "completion": percent(report.completion_rate),
                        "depth_svg": bar_chart_svg(
                            report.depth,
                            DEPTH_LABELS,
                            title=_("Where readers of “%(title)s” stopped") % {"title": report.title},
                            width=320,
                            height=90,
                        ),
                    }
                )
        context.update(
            form=form,
            since=since,
            until=until,
            articles=articles,
            peaks_svg=self._peaks_chart(),
            peak_days=PEAK_DAYS,
        )
        return TemplateResponse(request, "admin/presence/readingsession/ranking.html", context)

    def _peaks_chart(self):
        today = reports.current_day()
        peaks = {peak.date: peak.count for peak in reports.daily_peaks(PEAK_DAYS, today=today)}
        days = [today - timedelta(days=n) for n in range(PEAK_DAYS - 1, -1, -1)]
        return bar_chart_svg(
            [peaks.get(day, 0) for day in days],
            [day.strftime("%m-%d") for day in days],
            title=_("Most readers online at once, per day (last %(days)d days)") % {"days": PEAK_DAYS},
            width=720,
            height=200,
        )

    def _live_numbers(self) -> dict:
        """Site-wide count and top rooms from the presence store (never the database)."""
        return {
            "online": live.online_count(),
            "rooms": [
                {"room": r["room"], "count": r["count"], "title": r.get("title") or r["room"], "url": r.get("url")}
                for r in live.live_ranking(limit=LIVE_LIMIT)
            ],
        }

    def live_view(self, request: HttpRequest) -> HttpResponse:
        context = self._page_context(request, _("Live now"))
        try:
            numbers = self._live_numbers()
        except Unavailable:
            logger.warning("live admin page: presence store unavailable", exc_info=True)
            numbers = {"online": None, "rooms": [], "unavailable": True}
        context.update(numbers, refresh_seconds=LIVE_REFRESH_SECONDS, limit=LIVE_LIMIT)
        return TemplateResponse(request, "admin/presence/readingsession/live.html", context)

    def live_data_view(self, request: HttpRequest) -> JsonResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            return JsonResponse(self._live_numbers())  # admin_view adds the no-cache headers
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
