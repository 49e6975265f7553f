"""REST API shapes: responses, and the query parameters each endpoint validates.

Query serializers give every bad parameter a 400 with a per-field message and document the
parameters in the OpenAPI schema. Public shapes carry reader ids only, never identities.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from presence.models import OnlinePeak, ReadingSession
from presence.reports import DEPTH_BUCKETS
from presence.store.base import HISTOGRAM_BUCKETS

DEFAULT_PERIOD = timedelta(days=7)
# Largest value SQLite and PostgreSQL bigint columns accept in a lookup.
MAX_DB_INT = 2**63 - 1


# -- live (public) ---------------------------------------------------------------------------
class OnlineSerializer(serializers.Serializer):
    online = serializers.IntegerField(min_value=0, help_text="Distinct readers on the site now.")


class RankedRoomSerializer(serializers.Serializer):
    room = serializers.CharField(help_text="Room name, `<kind>:<key>`.")
    count = serializers.IntegerField(min_value=1, help_text="Readers in the room now.")
    title = serializers.CharField()
    url = serializers.CharField(allow_null=True, help_text="The object's page, when it has one.")


class ReaderSerializer(serializers.Serializer):
    """The protocol's reader object."""

    id = serializers.CharField(help_text="Opaque reader id (an HMAC of the identity).")
    name = serializers.CharField(allow_null=True, help_text="Display name the reader gave, if any.")
    position = serializers.FloatField(
        allow_null=True, min_value=0, max_value=1, help_text="Position in the article, null until reported."
    )
    joined_at = serializers.IntegerField(help_text="Server time (ms) the reader entered the room.")
    updated_at = serializers.IntegerField(help_text="Server time (ms) of the reader's last update.")


class RoomDetailSerializer(serializers.Serializer):
    room = serializers.CharField()
    count = serializers.IntegerField(min_value=0, help_text="Readers in the room now (all of them).")
    readers = ReaderSerializer(
        many=True, help_text="The most recently updated readers, at most PRESENCE_ROOM_STATE_READERS."
    )
    histogram = serializers.ListField(
        child=serializers.IntegerField(min_value=0),
        min_length=HISTOGRAM_BUCKETS,
        max_length=HISTOGRAM_BUCKETS,
        help_text="Readers by position: bucket i holds [i/20, (i+1)/20); no position yet is bucket 0.",
    )


class RankingQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=100, default=10, help_text="How many rooms (1 to 100).")


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Signed identity token for the protocol's `identify` frame.")


class DetailSerializer(serializers.Serializer):
    """DRF's error body for 403, 404, 429 and 503."""

    detail = serializers.CharField()


# -- history (staff) -------------------------------------------------------------------------
class ReadingSessionSerializer(serializers.ModelSerializer):
    user = serializers.IntegerField(source="user_id", allow_null=True, read_only=True)
    username = serializers.CharField(source="user.username", allow_null=True, read_only=True)

    class Meta:
        model = ReadingSession
        fields = [
            "id",
            "room",
            "title",
            "reader_id",
            "user",
            "username",
            "name",
            "started_at",
            "ended_at",
            "duration_seconds",
            "furthest_position",
            "last_position",
            "end_reason",
        ]
        read_only_fields = fields


class StoredDateTimeField(serializers.DateTimeField):
    """A query's date-time, comparable with the stored ones. With ``USE_TZ`` off those are
    naive in ``TIME_ZONE``, so ``...Z`` or ``+08:00`` is converted there (DRF would take the
    naive UTC time, hours off); a naive value is already in ``TIME_ZONE``."""

    def enforce_timezone(self, value):
        if not settings.USE_TZ and timezone.is_aware(value):
            return timezone.make_naive(value, timezone.get_default_timezone())
        return super().enforce_timezone(value)


class PeriodQuerySerializer(serializers.Serializer):
    since = StoredDateTimeField(required=False, help_text="ISO 8601 date and time, inclusive.")
    until = StoredDateTimeField(required=False, help_text="ISO 8601 date and time, exclusive.")

    def validate(self, attrs: dict) -> dict:
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and since >= until:
            raise serializers.ValidationError({"until": "must be later than since."})
        return attrs


class HistoryQuerySerializer(PeriodQuerySerializer):
    room = serializers.CharField(required=False, max_length=100, help_text="Only this room, e.g. `article:1`.")
    user = serializers.IntegerField(required=False, min_value=1, max_value=MAX_DB_INT, help_text="Only this user id.")


class ArticleRankingQuerySerializer(PeriodQuerySerializer):
    since = StoredDateTimeField(required=False, help_text="ISO 8601 date and time, inclusive; default 7 days ago.")
    until = StoredDateTimeField(required=False, help_text="ISO 8601 date and time, exclusive; default now.")
    limit = serializers.IntegerField(min_value=1, max_value=100, default=20, help_text="How many articles (1 to 100).")

    def validate(self, attrs: dict) -> dict:
        attrs.setdefault("until", timezone.now())
        if "since" not in attrs:
            try:
                attrs["since"] = attrs["until"] - DEFAULT_PERIOD
            except OverflowError:
                raise serializers.ValidationError({"until": "is too early."}) from None
        return super().validate(attrs)


class ArticleReportSerializer(serializers.Serializer):
    room = serializers.CharField()
    title = serializers.CharField()
    url = serializers.CharField(allow_null=True)
    reads = serializers.IntegerField(min_value=0, help_text="Reading sessions started in the period.")
    unique_readers = serializers.IntegerField(min_value=0)
    median_seconds = serializers.FloatField(min_value=0, help_text="Median active reading time.")
    completion_rate = serializers.FloatField(
        min_value=0, max_value=1, help_text="Share of sessions that reached 90% of the article."
    )
    depth = serializers.ListField(
        child=serializers.IntegerField(min_value=0),
        min_length=DEPTH_BUCKETS,
        max_length=DEPTH_BUCKETS,
        help_text="Sessions by furthest position, in deciles (never scrolled: the first).",
    )


class PeaksQuerySerializer(serializers.Serializer):
    days = serializers.IntegerField(min_value=1, max_value=366, default=30, help_text="Days back, today included.")


class OnlinePeakSerializer(serializers.ModelSerializer):
    class Meta:
        model = OnlinePeak
        fields = ["date", "count", "at"]
        read_only_fields = fields
