"""The reading history in Wagtail's admin menu: the reading ranking, the live page and the reading
sessions (a read-only list with filters), for users with the view permission on reading sessions.

Wagtail imports this module itself (it looks for ``wagtail_hooks`` in every installed app); nothing
in the app imports it, so a site without Wagtail never loads Wagtail. It needs no
``django.contrib.admin`` either: the numbers come from ``presence/dashboard.py``, as in Django's admin.
"""

from __future__ import annotations

import logging

import django_filters
from django.contrib.auth import get_permission_codename
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.http import JsonResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _
from django.views.generic import TemplateView, View
from wagtail import hooks
from wagtail.admin.filters import DateRangePickerWidget, WagtailFilterSet
from wagtail.admin.ui.tables import Column, DateColumn, TitleColumn
from wagtail.admin.views.generic import IndexView, InspectView
from wagtail.admin.views.generic.base import WagtailAdminTemplateMixin
from wagtail.admin.views.generic.permissions import PermissionCheckedMixin
from wagtail.admin.viewsets.base import ViewSet, ViewSetGroup
from wagtail.admin.viewsets.model import ModelViewSet
from wagtail.permission_policies import ModelPermissionPolicy

from presence import dashboard
from presence.errors import Unavailable
from presence.models import EndReason, ReadingSession

logger = logging.getLogger(__name__)

# Who sees the menu and its pages: superusers, and users (or groups) with "Can view reading session".
permission_policy = ModelPermissionPolicy(ReadingSession)
REQUIRED = ["view"]
OPEN = "open"  # stands for EndReason.OPEN (""), which a filter's empty value cannot say


class ReadingPermission(PermissionCheckedMixin):
    permission_policy = permission_policy
    any_permission_required = REQUIRED


def _may_view(request) -> bool:
    return permission_policy.user_has_any_permission(request.user, REQUIRED)


# -- the reading sessions: a read-only listing -----------------------------------------------------


class ReadingSessionFilterSet(WagtailFilterSet):
    started_at = django_filters.DateFromToRangeFilter(label=_("Started"), widget=DateRangePickerWidget)
    room = django_filters.ChoiceFilter(label=_("Article"), choices=dashboard.article_choices, empty_label=_("All"))
    reader = django_filters.ChoiceFilter(
        label=_("Reader"),
        choices=[("user", _("Signed in")), ("anonymous", _("Anonymous"))],
        empty_label=_("All"),
        method="filter_reader",
    )
    end_reason = django_filters.ChoiceFilter(
        label=_("End reason"),
        choices=[(value or OPEN, label) for value, label in EndReason.choices],
        empty_label=_("All"),
        method="filter_end_reason",
    )

    class Meta:
        model = ReadingSession
        fields = []

    def filter_reader(self, queryset, name, value):
        return queryset.filter(user__isnull=value == "anonymous")

    def filter_end_reason(self, queryset, name, value):
        return queryset.filter(end_reason="" if value == OPEN else value)


class SessionIndexView(ReadingPermission, IndexView):
    """Reading sessions, newest first; each opens a read-only detail page."""

    def get_base_queryset(self):
        return super().get_base_queryset().select_related("user")

    @cached_property
    def columns(self):
        return [
            TitleColumn(
                "article",
                label=_("Article"),
                accessor=lambda s: s.title or s.room,
                sort_key="title",
                get_url=self.get_inspect_url,
            ),
            Column(
                "reader",
                label=_("Reader"),
                accessor=lambda s: s.user.get_username() if s.user is not None else s.reader_id,
            ),
            Column("name", label=_("Name")),
            DateColumn("started_at", label=_("Started"), sort_key="started_at"),
            Column(
                "duration",
                label=_("Duration"),
                accessor=lambda s: dashboard.human_duration(s.duration_seconds),
                sort_key="duration_seconds",
            ),
            Column(
                "furthest",
                label=_("Furthest"),
                accessor=lambda s: dashboard.percent(s.furthest_position),
                sort_key="furthest_position",
            ),
            Column("end_reason", label=_("End reason"), accessor="get_end_reason_display"),
        ]


class SessionInspectView(ReadingPermission, InspectView):
    pass


class ReadingSessionViewSet(ModelViewSet):
    """Listing, filters, search and a detail page; nothing to add, edit, copy or delete: history is
    evidence (deleting stays in Django's admin, for staff with the delete permission)."""

    model = ReadingSession
    icon = "list-ul"
    menu_label = _("Reading sessions")
    index_view_class = SessionIndexView
    inspect_view_class = SessionInspectView
    inspect_view_enabled = True
    copy_view_enabled = False
    add_to_reference_index = False
    filterset_class = ReadingSessionFilterSet
    search_fields = ["title", "name", "user__username"]
    ordering = ["-started_at"]
    list_per_page = 50
    inspect_view_fields = [
        "room", "title", "reader_id", "user", "name", "started_at", "ended_at",
        "duration_seconds", "furthest_position", "last_position", "end_reason",
    ]

    def get_common_view_kwargs(self, **kwargs):
        # Only the listing and the detail exist: no add, edit, copy, delete, history or usage links.
        kwargs = super().get_common_view_kwargs(**kwargs)
        for name in ("add_url_name", "edit_url_name", "delete_url_name", "copy_url_name", "history_url_name",
                     "usage_url_name"):
            kwargs[name] = None
        return kwargs

    def get_urlpatterns(self):
        return [
            path("", self.index_view, name="index"),
            path("results/", self.index_results_view, name="index_results"),
            path("inspect/<str:pk>/", self.inspect_view, name="inspect"),
        ]

    @cached_property
    def menu_item_class(self):
        return _menu_item_class(super().menu_item_class)

    def register_admin_url_finder(self):
        # Wagtail's URL finder links objects to their edit page; reading sessions have none.
        pass

    def get_permissions_to_register(self):
        # Wagtail's group editor offers the one permission these pages need.
        codename = get_permission_codename("view", ReadingSession._meta)
        return Permission.objects.filter(
            content_type=ContentType.objects.get_for_model(ReadingSession), codename=codename
        )


def _menu_item_class(base):
    return type(f"Reading{base.__name__}", (base,), {"is_shown": lambda self, request: _may_view(request)})


# -- the ranking and live pages ---------------------------------------------------------------------

# Namespaces of the viewsets' URLs (``reverse("presence_ranking:index")``).
RANKING, LIVE, SESSIONS = "presence_ranking", "presence_live", "presence_sessions"


class ReadingPageView(ReadingPermission, WagtailAdminTemplateMixin, TemplateView):
    def get_breadcrumbs_items(self):
        return [*self.breadcrumbs_items, {"url": "", "label": self.page_title}]


class RankingView(ReadingPageView):
    """Articles ranked by reads over a period, with the figures and charts of Django's admin page."""

    page_title = _("Reading ranking")
    header_icon = "list-ol"
    template_name = "presence/wagtail/ranking.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        form = dashboard.ranking_form(self.request.GET)
        since = until = None
        articles = []
        if form.is_valid():
            since, until = form.bounds(timezone.now())
            articles = dashboard.ranking_rows(since, until)
        context.update(
            form=form,
            since=since,
            until=until,
            articles=articles,
            peaks_svg=dashboard.peaks_chart(),
            peak_days=dashboard.PEAK_DAYS,
            sessions_url=reverse(f"{SESSIONS}:index"),
            live_url=reverse(f"{LIVE}:index"),
        )
        return context


class LiveView(ReadingPageView):
    """The online count and the current ranking, refreshed every few seconds."""

    page_title = _("Live now")
    header_icon = "view"
    template_name = "presence/wagtail/live.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        try:
            numbers = dashboard.live_numbers()
        except Unavailable:
            logger.warning("live page (Wagtail admin): presence store unavailable", exc_info=True)
            numbers = {"online": None, "rooms": [], "unavailable": True}
        context.update(
            numbers,
            refresh_seconds=dashboard.LIVE_REFRESH_SECONDS,
            limit=dashboard.LIVE_LIMIT,
            data_url=reverse(f"{LIVE}:data"),
            ranking_url=reverse(f"{RANKING}:index"),
        )
        return context


class LiveDataView(ReadingPermission, View):
    """The live page's numbers as JSON (Wagtail's admin URLs add the no-cache headers)."""

    def get(self, request):
        try:
            return JsonResponse(dashboard.live_numbers())
        except Unavailable as exc:
            return JsonResponse({"error": exc.code, "message": exc.message}, status=503)


class RankingViewSet(ViewSet):
    menu_label = _("Reading ranking")
    icon = "list-ol"

    def get_urlpatterns(self):
        return [path("", RankingView.as_view(), name="index")]

    @cached_property
    def menu_item_class(self):
        return _menu_item_class(super().menu_item_class)


class LiveViewSet(ViewSet):
    menu_label = _("Live now")
    icon = "view"

    def get_urlpatterns(self):
        return [path("", LiveView.as_view(), name="index"), path("data/", LiveDataView.as_view(), name="data")]

    @cached_property
    def menu_item_class(self):
        return _menu_item_class(super().menu_item_class)


class ReadingGroup(ViewSetGroup):
    """"Reading" in the main menu: the ranking, the live page and the sessions (shown to users who
    may view reading sessions; Wagtail hides a submenu whose items are all hidden)."""

    menu_label = _("Reading")
    menu_icon = "doc-full"
    menu_order = 800

    def __init__(self):
        self.items = (
            RankingViewSet(RANKING, url_prefix="reading/ranking"),
            LiveViewSet(LIVE, url_prefix="reading/live"),
            ReadingSessionViewSet(SESSIONS, url_prefix="reading/sessions"),
        )
        super().__init__()


@hooks.register("register_admin_viewset")
def register_reading_history():
    return ReadingGroup()
