"""The REST API under ``/api/presence/``.

Public endpoints (online, rooms, room detail) read live numbers from the presence store through
``presence.live`` and are throttled per anonymous client; the token is for signed-in users;
history, article ranking and online peaks are for staff and read the database. Their OpenAPI
schema and Swagger UI: ``presence.api_docs``.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils.cache import add_never_cache_headers
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_view
from rest_framework import generics, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import APIException, NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny, IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from presence import live, reports
from presence.api_docs import extend_schema
from presence.errors import InvalidRoom, Unavailable
from presence.identity import make_token
from presence.models import ReadingSession
from presence.serializers import (
    ArticleRankingQuerySerializer,
    ArticleReportSerializer,
    DetailSerializer,
    HistoryQuerySerializer,
    OnlinePeakSerializer,
    OnlineSerializer,
    PeaksQuerySerializer,
    RankedRoomSerializer,
    RankingQuerySerializer,
    ReadingSessionSerializer,
    RoomDetailSerializer,
    TokenSerializer,
)
from presence.throttling import PresenceAnonThrottle

BAD_REQUEST = OpenApiResponse(dict[str, list[str]], description="A message per invalid query parameter.")
FORBIDDEN = OpenApiResponse(DetailSerializer, description="Not signed in, or not allowed.")
THROTTLED = OpenApiResponse(DetailSerializer, description="Too many requests from this anonymous client.")
UNAVAILABLE = OpenApiResponse(DetailSerializer, description="The presence store could not be reached.")


class StoreUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Presence store unavailable, try again."
    default_code = "unavailable"


class LiveView(APIView):
    """Base of the public endpoints: anyone, throttled, store outages answered with 503."""

    permission_classes = [AllowAny]
    throttle_classes = [PresenceAnonThrottle]

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, Unavailable):
            exc = StoreUnavailable()
        return super().handle_exception(exc)


class OnlineView(LiveView):
    @extend_schema(
        summary="Readers online now",
        description="Distinct readers on the site now (a browser with several tabs counts once).",
        responses={200: OnlineSerializer, 429: THROTTLED, 503: UNAVAILABLE},
        tags=["live"],
    )
    def get(self, request: Request) -> Response:
        return Response(OnlineSerializer({"online": live.online_count()}).data)


class RoomRankingView(LiveView):
    @extend_schema(
        summary="Most read rooms now",
        description="Rooms with readers now, most readers first, with the titles and URLs of their articles.",
        parameters=[RankingQuerySerializer],
        responses={200: RankedRoomSerializer(many=True), 400: BAD_REQUEST, 429: THROTTLED, 503: UNAVAILABLE},
        tags=["live"],
    )
    def get(self, request: Request) -> Response:
        query = RankingQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        ranking = live.live_ranking(query.validated_data["limit"])
        return Response(RankedRoomSerializer(ranking, many=True).data)


class RoomDetailView(LiveView):
    @extend_schema(
        summary="Readers of one room now",
        description=(
            "The room's reader count, its most recently updated readers (at most "
            "`PRESENCE_ROOM_STATE_READERS`) and the position histogram of all its readers: "
            "the protocol's `room_state`."
        ),
        parameters=[OpenApiParameter("room", OpenApiTypes.STR, OpenApiParameter.PATH, description="e.g. `article:1`")],
        responses={
            200: RoomDetailSerializer,
            404: OpenApiResponse(DetailSerializer, description="Malformed room name, unknown kind or no such object."),
            429: THROTTLED,
            503: UNAVAILABLE,
        },
        tags=["live"],
    )
    def get(self, request: Request, room: str) -> Response:
        try:
            detail = live.room_detail(room)
        except InvalidRoom as exc:
            raise NotFound(exc.message) from exc
        return Response(RoomDetailSerializer(detail).data)


class TokenView(APIView):
    # The session cookie only: the token is for pages of a signed-in browser, and a view that
    # took passwords (HTTP basic, DRF's default) would let anyone guess them here, unthrottled.
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Identity token of the signed-in user",
        description=(
            "A signed, expiring token (`PRESENCE_TOKEN_MAX_AGE`) for the WebSocket `identify` "
            "frame, so a page's connection counts as the signed-in user; valid while the session "
            "that asked for it is signed in with the same password. Session cookie only. Never cached."
        ),
        responses={200: TokenSerializer, 403: FORBIDDEN},
        tags=["identity"],
    )
    def get(self, request: Request) -> Response:
        response = Response(TokenSerializer({"token": make_token(request.user, request.session)}).data)
        add_never_cache_headers(response)
        return response


class HistoryPagination(PageNumberPagination):
    page_size = 50


# Query parameter -> lookup on ReadingSession.
HISTORY_FILTERS = {"room": "room", "user": "user_id", "since": "started_at__gte", "until": "started_at__lt"}


@extend_schema_view(
    get=extend_schema(
        summary="Reading sessions",
        description="One session per reader, room and server process, newest first, 50 a page.",
        parameters=[HistoryQuerySerializer],
        responses={
            200: ReadingSessionSerializer(many=True),
            400: BAD_REQUEST,
            403: FORBIDDEN,
            404: OpenApiResponse(DetailSerializer, description="No such page."),
        },
        tags=["history"],
    )
)
class HistoryView(generics.ListAPIView):
    permission_classes = [IsAdminUser]
    serializer_class = ReadingSessionSerializer
    pagination_class = HistoryPagination
    queryset = ReadingSession.objects.select_related("user").order_by("-started_at", "-pk")

    def get_queryset(self) -> QuerySet[ReadingSession]:
        query = HistoryQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        filters = {HISTORY_FILTERS[name]: value for name, value in query.validated_data.items()}
        return super().get_queryset().filter(**filters)


class ArticleRankingView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Most read articles in a period",
        description=(
            "Articles ranked by reading sessions started in `[since, until)`, with unique readers, "
            "median reading time, completion rate and read depth."
        ),
        parameters=[ArticleRankingQuerySerializer],
        responses={200: ArticleReportSerializer(many=True), 400: BAD_REQUEST, 403: FORBIDDEN},
        tags=["history"],
    )
    def get(self, request: Request) -> Response:
        query = ArticleRankingQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        ranking = reports.article_ranking(params["since"], params["until"], params["limit"])
        return Response(ArticleReportSerializer(ranking, many=True).data)


class PeaksView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Daily online peaks",
        description=("The highest online count of each day (UTC with USE_TZ, else the TIME_ZONE day) and when it "
                     "was first reached, newest first."),
        parameters=[PeaksQuerySerializer],
        responses={200: OnlinePeakSerializer(many=True), 400: BAD_REQUEST, 403: FORBIDDEN},
        tags=["history"],
    )
    def get(self, request: Request) -> Response:
        query = PeaksQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        peaks = reports.daily_peaks(query.validated_data["days"])
        return Response(OnlinePeakSerializer(peaks, many=True).data)
