"""What the staff pages of the reading history show, whichever admin draws them: the ranking of a
period with its read-depth charts, the daily online peaks, and the live numbers.

Django's admin (``presence/admin.py``) and Wagtail's (``presence/wagtail_hooks.py``) render these;
nothing here imports either admin, so a site may have one, the other or both.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Max, OuterRef, Subquery
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from presence import live, reports
from presence.charts import bar_chart_svg
from presence.models import ReadingSession

LIVE_LIMIT = 20
LIVE_REFRESH_SECONDS = 5
PEAK_DAYS = 30
DEPTH_LABELS = [f"{i * 10}–{(i + 1) * 10}%" for i in range(reports.DEPTH_BUCKETS)]


def article_choices() -> list[tuple[str, str]]:
    """Rooms that have history, named by the latest title each was read under: a filter's choices."""
    latest_title = (
        ReadingSession.objects.filter(room=OuterRef("room")).exclude(title="").order_by("-started_at").values("title")[:1]
    )
    rows = (
        ReadingSession.objects.order_by()
        .values("room")
        .annotate(last=Max("started_at"))
        .annotate(latest_title=Subquery(latest_title))
    )
    choices = [(row["room"], row["latest_title"] or row["room"]) for row in rows]
    return sorted(choices, key=lambda choice: (str(choice[1]).casefold(), choice[0]))


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


def ranking_form(query: dict) -> RankingPeriodForm:
    """The period form of a ranking page's query string (the last 7 days when it names none)."""
    return RankingPeriodForm(query if "period" in query else {"period": "7d"})


def ranking_rows(since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The most read articles of ``[since, until)``, each with its figures as shown and its chart."""
    return [
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
        for report in reports.article_ranking(since, until)
    ]


def peaks_chart(today: date | None = None) -> SafeString:
    """The site-wide online peak of each of the last ``PEAK_DAYS`` days, as an SVG bar chart."""
    today = today or reports.current_day()
    peaks = {peak.date: peak.count for peak in reports.daily_peaks(PEAK_DAYS, today=today)}
    days = [today - timedelta(days=n) for n in range(PEAK_DAYS - 1, -1, -1)]
    return bar_chart_svg(
        [peaks.get(day, 0) for day in days],
        [day.strftime("%m-%d") for day in days],
        title=_("Most readers online at once, per day (last %(days)d days)") % {"days": PEAK_DAYS},
        width=720,
        height=200,
    )


def live_numbers() -> dict[str, Any]:
    """Site-wide count and top rooms from the presence store (never the database); raises
    ``Unavailable`` when the store cannot be reached."""
    return {
        "online": live.online_count(),
        "rooms": [
            {"room": r["room"], "count": r["count"], "title": r.get("title") or r["room"], "url": r.get("url")}
            for r in live.live_ranking(limit=LIVE_LIMIT)
        ],
    }
