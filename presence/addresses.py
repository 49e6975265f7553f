"""The client's address: one notion for the WebSocket cap, the REST API's throttles and the beacon.

The address is the peer of the socket, unless that peer is a trusted proxy
(``PRESENCE_TRUSTED_PROXIES``, IPs or CIDRs; none by default): then it is the rightmost
``X-Forwarded-For`` entry that is not a trusted proxy, the last address a proxy of ours saw.
Entries to its left were written by the client and are never believed. ``X-Forwarded-For``
from an untrusted peer is ignored.

An ASGI server that rewrites the client address itself (Daphne or uvicorn ``--proxy-headers``)
loses the peer: its ``scope["client"]`` is then one of the header's entries. Such a scope is
recognised (its client is an entry of the header it came with) and read again from the header
by the rules above, as if the peer were a trusted proxy; with no trusted proxies configured the
address cannot be known (``UNVERIFIED``): the caps and throttles refuse such a connection rather
than give it an allowance of its own, so a client that writes the header can neither pick its
address nor add to its own (docs/security.md, "Client addresses").

What is counted or throttled is a keyed hash of the address (``address_key``), never the address:
an IPv6 address counts by its /64 network (what one host or home is given), an IPv4-mapped IPv6
address as its IPv4 address.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from presence.conf import app_settings

logger = logging.getLogger(__name__)

# The address of a connection that a rewriting server took from an untrusted header: unknown.
UNVERIFIED = "unverified-forwarded-address"
# In PRESENCE_TRUSTED_PROXIES: connections without a peer address (a Unix socket) come from a proxy.
UNIX = "unix"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    networks = []
    for entry in entries:
        if entry == UNIX:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"PRESENCE_TRUSTED_PROXIES: {entry!r} is not an IP address or network ({exc})"
            ) from None
    return tuple(networks)


def trusted_proxies() -> tuple[IPNetwork, ...]:
    return _networks(tuple(str(entry) for entry in app_settings.TRUSTED_PROXIES or ()))


def check_trusted_proxies() -> list[str]:
    """Messages for entries of ``PRESENCE_TRUSTED_PROXIES`` that are not IPs or networks (system check)."""
    errors = []
    for entry in app_settings.TRUSTED_PROXIES or ():
        if entry == UNIX:
            continue
        try:
            ipaddress.ip_network(str(entry), strict=False)
        except ValueError as exc:
            errors.append(f"{entry!r} is not an IP address or network: {exc}")
    return errors


def _ip(text: str | None) -> IPAddress | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]" or "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # no zone index
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: IPAddress | None) -> bool:
    return ip is not None and any(ip in network for network in trusted_proxies())


def forwarded_entries(values: Iterable[str]) -> list[str]:
    """The entries of every ``X-Forwarded-For`` header line, leftmost first."""
    return [entry.strip() for value in values for entry in value.split(",") if entry.strip()]


def _through_proxies(entries: list[str]) -> str | None:
    """The rightmost entry that is not a trusted proxy (the client of our outermost proxy)."""
    last = None
    for entry in reversed(entries):
        ip = _ip(entry)
        if ip is None:
            return last  # a garbled hop: the nearest trusted proxy is all that is known
        if not _trusted(ip):
            return str(ip)
        last = str(ip)
    return last


@functools.lru_cache(maxsize=1)
def _warn_unverified() -> None:
    logger.warning(
        "presence: the server took client addresses from X-Forwarded-For (--proxy-headers) but "
        "PRESENCE_TRUSTED_PROXIES is empty; such connections are refused. Set "
        "PRESENCE_TRUSTED_PROXIES to your proxies' addresses (docs/security.md, \"Client addresses\")."
    )


def client_address(peer: str | None, forwarded: Iterable[str] = ()) -> str | None:
    """The client's address from the socket's peer and the ``X-Forwarded-For`` header lines."""
    entries = forwarded_entries(forwarded)
    peer_ip = _ip(peer)
    if peer_ip is not None and entries and str(peer_ip) in {str(_ip(e)) for e in entries}:
        # The server replaced the peer with an entry of the header: the peer is lost.
        if not trusted_proxies() and UNIX not in (app_settings.TRUSTED_PROXIES or ()):
            _warn_unverified()
            return UNVERIFIED
        return _through_proxies(entries)
    if peer_ip is None:
        if peer is None and UNIX in (app_settings.TRUSTED_PROXIES or ()) and entries:
            return _through_proxies(entries)
        return peer or None
    if _trusted(peer_ip) and entries:
        return _through_proxies(entries) or str(peer_ip)
    return str(peer_ip)


def from_scope(scope: dict) -> str | None:
    """The client's address of an ASGI connection (``scope["client"]`` and its headers)."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    forwarded = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"x-forwarded-for"]
    return client_address(peer, forwarded)


def from_request(request) -> str | None:
    """The client's address of a Django request (``REMOTE_ADDR`` is the ASGI scope's client)."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    return client_address(request.META.get("REMOTE_ADDR"), [forwarded] if forwarded else [])


def bucket(address: str) -> str:
    """What one client is counted by: an IPv4 address, or the /64 network of an IPv6 address."""
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip) if ip is not None else address


def address_key(address: str) -> str:
    """A keyed hash of a client's address bucket: what is counted or throttled per address, so
    that no raw IP address is kept in memory, caches or Redis."""
    key = ("presence.address:" + settings.SECRET_KEY).encode()
    return hmac.new(key, bucket(address).encode(), hashlib.sha256).hexdigest()[:32]
