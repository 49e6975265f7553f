"""One notion of the client's address (``presence/addresses.py``), for the WebSocket caps, the REST
API's throttles and the beacon alike. Real proxies and Daphne ``--proxy-headers``: ``tests/test_hostile.py``;
the throttle through the REST API: ``tests/test_api.py``."""

from __future__ import annotations

import logging

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory, override_settings

from presence import addresses

PROXIES = ["10.0.0.0/8", "192.0.2.1"]


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        # No trusted proxy: the socket's peer, whatever the header says.
        ("203.0.113.5", [], [], "203.0.113.5"),
        ("203.0.113.5", ["198.51.100.1"], [], "203.0.113.5"),
        ("203.0.113.5", ["198.51.100.1, 10.0.0.1"], PROXIES, "203.0.113.5"),  # an untrusted peer's header
        # A trusted proxy: the rightmost entry that is no trusted proxy.
        ("10.0.0.2", ["198.51.100.1"], PROXIES, "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1"], PROXIES, "198.51.100.1"),  # the client wrote 6.6.6.6
        ("10.0.0.2", ["6.6.6.6", "198.51.100.1, 192.0.2.1"], PROXIES, "198.51.100.1"),  # two lines, two proxies
        ("10.0.0.2", [], PROXIES, "10.0.0.2"),  # the proxy itself, no header
        ("10.0.0.2", ["10.9.9.9"], PROXIES, "10.9.9.9"),  # nothing but proxies: the outermost
        ("10.0.0.2", ["6.6.6.6, not-an-ip"], PROXIES, "10.0.0.2"),  # a garbled hop: the nearest proxy
        ("10.0.0.2", ["[2001:db8::7]:4711"], PROXIES, "2001:db8::7"),
        ("::ffff:10.0.0.2", ["198.51.100.1"], PROXIES, "198.51.100.1"),  # IPv4-mapped peer
        # A server that rewrote the peer from the header (--proxy-headers): the peer is lost.
        ("6.6.6.6", ["6.6.6.6"], [], addresses.UNVERIFIED),
        ("6.6.6.6", ["6.6.6.6, 198.51.100.1"], [], addresses.UNVERIFIED),
        ("6.6.6.6", ["6.6.6.6, 198.51.100.1"], PROXIES, "198.51.100.1"),
        ("198.51.100.1", ["6.6.6.6, 198.51.100.1"], PROXIES, "198.51.100.1"),  # uvicorn's rightmost pick
        # A Unix socket: no peer; its header only from a proxy declared with "unix".
        (None, ["198.51.100.1"], [], None),
        (None, ["6.6.6.6, 198.51.100.1"], ["unix"], "198.51.100.1"),
    ],
)
def test_client_address(peer, forwarded, trusted, expected):
    with override_settings(PRESENCE_TRUSTED_PROXIES=trusted):
        assert addresses.client_address(peer, forwarded) == expected


def test_a_rewriting_server_without_trusted_proxies_is_logged_once(caplog):
    addresses._warn_unverified.cache_clear()
    with caplog.at_level(logging.WARNING, "presence.addresses"):
        for n in range(3):
            assert addresses.client_address(f"6.6.6.{n}", [f"6.6.6.{n}"]) == addresses.UNVERIFIED
    assert len([r for r in caplog.records if "PRESENCE_TRUSTED_PROXIES" in r.getMessage()]) == 1


def test_scope_and_request_read_the_same_address():
    scope = {"client": ["10.0.0.2", 5000], "headers": [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.1")]}
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.1")
    with override_settings(PRESENCE_TRUSTED_PROXIES=PROXIES):
        assert addresses.from_scope(scope) == addresses.from_request(request) == "198.51.100.1"
    assert addresses.from_scope(scope) == addresses.from_request(request) == "10.0.0.2"
    assert addresses.from_scope({"headers": []}) is None


def test_ipv6_clients_count_by_their_64_network_and_keys_are_hashes():
    key = addresses.address_key("2001:db8:1:2::1")
    assert key == addresses.address_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert key != addresses.address_key("2001:db8:1:3::1")
    assert addresses.address_key("::ffff:192.0.2.7") == addresses.address_key("192.0.2.7")
    assert addresses.address_key("192.0.2.7") != addresses.address_key("192.0.2.8")
    assert "192.0.2.7" not in addresses.address_key("192.0.2.7") and len(key) == 32


def test_a_wrong_trusted_proxy_is_a_configuration_error():
    with override_settings(PRESENCE_TRUSTED_PROXIES=["10.0.0.0/8", "proxy.example"]):
        assert addresses.check_trusted_proxies() == [
            "'proxy.example' is not an IP address or network: "
            "'proxy.example' does not appear to be an IPv4 or IPv6 network"
        ]
        with pytest.raises(ImproperlyConfigured, match="proxy.example"):
            addresses.client_address("10.0.0.1", ["198.51.100.1"])


def test_a_wrong_trusted_proxy_is_a_system_check_error():
    from django.core.checks import run_checks

    with override_settings(PRESENCE_TRUSTED_PROXIES=["127.0.0.1", "proxy.example"]):
        errors = [m for m in run_checks() if m.id == "presence.E020"]
    assert len(errors) == 1 and "proxy.example" in errors[0].msg
    with override_settings(PRESENCE_TRUSTED_PROXIES=["127.0.0.1", "::1", "10.0.0.0/8", "unix"]):
        assert not [m for m in run_checks() if m.id == "presence.E020"]
