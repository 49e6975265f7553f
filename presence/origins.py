"""Which page origins may open the WebSocket or send the beacon (a same-site check of scheme, host, port).

An origin is allowed when it is listed in ``PRESENCE_ALLOWED_ORIGINS``, or when it is a page of
this site as the request itself shows it:

- its host is one of ``ALLOWED_HOSTS`` (with ``DEBUG`` on and none set: localhost);
- its scheme is ``https``, or ``http`` when the request did not arrive over TLS (an ``http`` page
  must not drive a ``wss`` endpoint; ``https`` is always accepted, as a proxy that terminates
  TLS without ``SECURE_PROXY_SSL_HEADER`` makes a secure page's request look plain);
- its port is the port of the request's ``Host`` (both the scheme's default when none is given).

So ``http://127.0.0.1:1`` or ``ftp://localhost`` is refused where ``http://127.0.0.1:8000`` is
the site. Hosts that serve the page and the socket on different ports or hosts list the page's
origin in ``PRESENCE_ALLOWED_ORIGINS`` (``"https://blog.example"``; a leading dot in the host
allows its subdomains; an entry without a scheme allows it over http and https on default ports).
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from django.conf import settings
from django.http.request import is_same_domain, split_domain_port, validate_host

from presence.conf import app_settings

DEFAULT_PORTS = {"http": 80, "https": 443}
DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]  # Django's own when DEBUG is on and ALLOWED_HOSTS empty


def _parse(origin: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port or None for the scheme's default) of an origin, None if malformed."""
    try:
        parts: SplitResult = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    if port == DEFAULT_PORTS.get(parts.scheme):
        port = None
    return parts.scheme, parts.hostname, port


def _listed(scheme: str, host: str, port: int | None) -> bool:
    for pattern in app_settings.ALLOWED_ORIGINS:
        if pattern == "*":
            return True
        if "://" not in pattern:
            schemes, parsed = ("http", "https"), _parse("http://" + pattern)
        else:
            parsed = _parse(pattern)
            schemes = (parsed[0],) if parsed else ()
        if parsed and scheme in schemes and port == parsed[2] and is_same_domain(host, parsed[1]):
            return True
    return False


def allowed(origin: str | None, host: str | None, secure: bool) -> bool:
    """Whether a page at ``origin`` may use this site's presence endpoints, for a request with
    the ``Host`` header ``host`` (None: unknown) that did (``secure``) or did not arrive over TLS."""
    if origin is None:
        return bool(app_settings.ALLOW_NO_ORIGIN)
    parsed = _parse(origin)
    if parsed is None:
        return False
    scheme, hostname, port = parsed
    if _listed(scheme, hostname, port):
        return True
    if scheme != "https" and (scheme != "http" or secure):
        return False
    allowed_hosts = settings.ALLOWED_HOSTS or (DEBUG_HOSTS if settings.DEBUG else [])
    if not validate_host(f"[{hostname}]" if ":" in hostname else hostname, allowed_hosts):
        return False
    request_port = None
    if host:
        domain, text = split_domain_port(host)
        if not domain:
            return False
        request_port = int(text) if text else None
        if request_port == DEFAULT_PORTS["https" if secure else "http"]:
            request_port = None
    return port == request_port


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def scope_is_secure(scope: dict) -> bool:
    """Whether an ASGI connection arrived over TLS: ``wss``, or the proxy header Django trusts
    (``SECURE_PROXY_SSL_HEADER``), as ``request.is_secure()`` reads it."""
    if scope.get("scheme") in ("wss", "https"):
        return True
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, expected = proxy_header
        if name.startswith("HTTP_"):
            value = _header(scope, name[5:].lower().replace("_", "-").encode("latin-1"))
            return value is not None and value.split(",", 1)[0].strip() == expected
    return False


def scope_allowed(scope: dict) -> bool:
    """``allowed`` for a WebSocket handshake."""
    return allowed(_header(scope, b"origin"), _header(scope, b"host"), scope_is_secure(scope))
