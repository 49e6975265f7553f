"""Reading history: one row per reader, room and server process, and the daily online peak.

Times come from the server clock only. No IP address or user agent is stored; anonymous
readers are known by their opaque reader id alone.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class EndReason(models.TextChoices):
    OPEN = "", _("still reading")
    LEFT = "left", _("left the article")
    CLOSED = "closed", _("closed the page")
    TIMEOUT = "timeout", _("went silent")
    SHUTDOWN = "shutdown", _("server shut down")
    CRASH_RECOVERED = "crash-recovered", _("server crashed (recovered)")
    IDENTIFY = "identify", _("signed in or out")


class ReadingSession(models.Model):
    room = models.CharField(_("room"), max_length=100)
    object_id = models.CharField(_("object id"), max_length=64, help_text=_("Key of the article in its room name."))
    title = models.CharField(
        _("title"), max_length=300, blank=True, help_text=_("The article's title when it was read.")
    )
    reader_id = models.CharField(
        _("reader id"), max_length=32, help_text=_("Opaque reader id, as other readers saw it.")
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="reading_sessions",
    )
    name = models.CharField(_("name"), max_length=40, blank=True, help_text=_("Display name the reader gave, if any."))
    started_at = models.DateTimeField(_("started at"))
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    checkpoint_at = models.DateTimeField(_("last checkpoint"), null=True, blank=True)
    duration_seconds = models.FloatField(
        _("duration (seconds)"), default=0, help_text=_("Active reading time, server clock.")
    )
    furthest_position = models.FloatField(_("furthest position"), null=True, blank=True)
    last_position = models.FloatField(_("last position"), null=True, blank=True)
    end_reason = models.CharField(
        _("end reason"), max_length=20, choices=EndReason.choices, blank=True, default=EndReason.OPEN
    )
    process = models.CharField(
        _("process"), max_length=100, blank=True, help_text=_("Server process that recorded it.")
    )

    class Meta:
        verbose_name = _("reading session")
        verbose_name_plural = _("reading sessions")
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["started_at"]),
            models.Index(fields=["room", "started_at"]),
            models.Index(fields=["user", "started_at"]),
            models.Index(fields=["end_reason", "checkpoint_at"]),
        ]
        constraints = [
            models.UniqueConstraint(fields=["process", "room", "reader_id", "started_at"], name="presence_session_once")
        ]

    def __str__(self) -> str:
        return f"{self.title or self.room} · {self.name or self.reader_id}"


class OnlinePeak(models.Model):
    """The highest site-wide online count of a day (UTC with ``USE_TZ``, else ``TIME_ZONE``'s) and when
    it was first reached."""

    date = models.DateField(_("date"), unique=True)
    count = models.PositiveIntegerField(_("readers online"))
    at = models.DateTimeField(_("first reached at"))

    class Meta:
        verbose_name = _("online peak")
        verbose_name_plural = _("online peaks")
        ordering = ["-date"]

    def __str__(self) -> str:
        return f"{self.date}: {self.count}"
