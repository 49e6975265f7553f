"""Who a connection is: identities, opaque reader ids, and signed identity tokens.

An identity is ``user:<pk>`` (verified by the server), ``anon:<session>`` or
``conn:<connection>``; counts are of distinct identities. Other clients only ever see
a reader id, an HMAC of the identity, so identities and session ids never leave the server.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from django.conf import settings
from django.core import signing

from presence.conf import app_settings
from presence.errors import InvalidToken

SESSION_RE = re.compile(r"\A[A-Za-z0-9_-]{8,64}\Z")  # \Z: "$" would accept a trailing newline


def is_valid_session(value: object) -> bool:
    return isinstance(value, str) and SESSION_RE.match(value) is not None


def for_user(pk: object) -> str:
    return f"user:{pk}"


def for_session(session: str) -> str:
    return f"anon:{session}"


def for_connection() -> str:
    """An identity of one connection alone, for clients that send no valid session."""
    return f"conn:{secrets.token_hex(12)}"


def from_handshake(user: object, session: object) -> str:
    """The identity of a new connection: the signed-in user, else the session, else its own."""
    if getattr(user, "is_authenticated", False):
        return for_user(user.pk)
    if is_valid_session(session):
        return for_session(session)
    return for_connection()


def user_pk(identity: str) -> str | None:
    """The user pk of a ``user:`` identity (for history), else None."""
    return identity[5:] if identity.startswith("user:") else None


def _reader_key() -> bytes:
    secret = app_settings.READER_SECRET or ("presence.reader:" + settings.SECRET_KEY)
    return hashlib.sha256(secret.encode()).digest()


def reader_id(identity: str) -> str:
    """Opaque, stable, non-reversible id of an identity, safe to broadcast."""
    digest = hmac.new(_reader_key(), identity.encode(), hashlib.sha256).digest()
    return digest[:12].hex()


def address_key(address: str) -> str:
    """A keyed hash of a client address: what is counted or throttled per address, so that
    no raw IP address is kept in memory, caches or Redis."""
    key = ("presence.address:" + settings.SECRET_KEY).encode()
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()[:32]


def make_token(user: object) -> str:
    """A signed, expiring token that lets a page re-key its connection to this user."""
    return signing.dumps({"u": str(user.pk)}, salt=app_settings.TOKEN_SALT, compress=False)


def identity_from_token(token: object) -> str:
    """The ``user:<pk>`` identity a token vouches for; raises InvalidToken."""
    if not isinstance(token, str) or not token or len(token) > 512 or not token.isascii():
        raise InvalidToken("token must be a non-empty string")
    try:
        data = signing.loads(token, salt=app_settings.TOKEN_SALT, max_age=app_settings.TOKEN_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise InvalidToken("token expired") from exc
    except signing.BadSignature as exc:
        raise InvalidToken("token signature is invalid") from exc
    if not isinstance(data, dict) or not isinstance(data.get("u"), str):
        raise InvalidToken("token payload is invalid")
    return for_user(data["u"])
