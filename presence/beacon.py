"""The reading-position beacon: ``POST /api/presence/beacon/``.

On ``pagehide`` the widget sends its final position with ``navigator.sendBeacon`` (a
``text/plain`` body, no CSRF token), because the socket's last ``progress`` may never leave a
closing tab. This module is HTTP only: it checks the origin and the body and hands the position
to ``reading_sessions.record_final_position``, which owns the rows and the handoff to a socket's
leave that arrives after the beacon.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from presence import identity, origins, reading_sessions, rooms
from presence.api_docs import extend_schema
from presence.errors import InvalidRoom
from presence.throttling import PresenceAnonThrottle

MAX_BODY = 1024


class BadBeacon(ValueError):
    pass


def _allowed_origin(request: HttpRequest) -> bool:
    """An Origin (else a Referer's origin) that the WebSocket handshake would accept too:
    scheme, host and port of a page of this site (``presence/origins.py``)."""
    origin = request.headers.get("Origin")
    if not origin:
        referer = urlsplit(request.headers.get("Referer") or "")
        origin = f"{referer.scheme}://{referer.netloc}" if referer.scheme and referer.netloc else None
    if not origin:
        return False
    try:
        host = request.get_host()
    except DisallowedHost:
        return False
    return origins.allowed(origin, host, request.is_secure())


def parse(body: bytes) -> dict[str, Any]:
    """The beacon's fields, checked with the protocol's rules; raises BadBeacon."""
    if len(body) > MAX_BODY:
        raise BadBeacon(f"body over {MAX_BODY} bytes")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadBeacon("body must be a JSON object") from exc
    if not isinstance(data, dict):
        raise BadBeacon("body must be a JSON object")
    position = data.get("position")
    if isinstance(position, bool) or not isinstance(position, int | float) or not math.isfinite(position):
        raise BadBeacon("position must be a finite number")
    if not 0 <= position <= 1:
        raise BadBeacon("position must be in [0, 1]")
    position += 0.0  # -0.0 is 0
    room = data.get("room")
    try:
        rooms.resolve_sync(room)
    except InvalidRoom as exc:
        raise BadBeacon(f"invalid room: {exc.message}") from exc
    session = data.get("session")
    if session is not None and not identity.is_valid_session(session):
        raise BadBeacon("session must be 8 to 64 characters of [A-Za-z0-9_-]")
    return {"room": room, "position": float(position), "session": session}


class SessionUser(BaseAuthentication):
    """The user of Django's session, without the CSRF check of DRF's SessionAuthentication: a
    beacon cannot send a token. The Origin check stands in for it (the view changes nothing but a
    reading position of the sender's own session)."""

    def authenticate(self, request):
        user = getattr(request._request, "user", None)
        return (user, None) if getattr(user, "is_authenticated", False) else None


class BeaconView(APIView):
    authentication_classes = [SessionUser]
    permission_classes = [AllowAny]
    throttle_classes = [PresenceAnonThrottle]

    # The widget's own endpoint, not part of the public API's schema (documented in the README).
    @extend_schema(exclude=True)
    def post(self, request: Request) -> HttpResponse:
        django_request = request._request
        if not _allowed_origin(django_request):
            return JsonResponse({"detail": "origin not allowed"}, status=403)
        length = django_request.META.get("CONTENT_LENGTH") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            return JsonResponse({"detail": f"body over {MAX_BODY} bytes"}, status=400)
        try:
            beacon = parse(django_request.body)
        except BadBeacon as exc:
            return JsonResponse({"detail": str(exc)}, status=400)
        user = request.user
        if user.is_authenticated:
            who = identity.for_user(user.pk)
        elif beacon["session"]:
            who = identity.for_session(beacon["session"])
        else:
            return JsonResponse({"detail": "session is required when not signed in"}, status=400)
        # The reader's id in that room, as its reading session there was recorded (protocol 1.1).
        reading_sessions.record_final_position(beacon["room"], identity.reader_id(who, beacon["room"]),
                                               beacon["position"])
        return HttpResponse(status=204)


beacon = BeaconView.as_view()
