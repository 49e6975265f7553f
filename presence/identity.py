"""Who a connection is: identities, opaque reader ids, and signed identity tokens.

An identity is ``user:<pk>`` (verified by the server), ``anon:<session>`` or
``conn:<connection>``; counts are of distinct identities. Other clients only ever see
reader ids, HMACs of the identity that differ in every room (protocol 1.1), so identities and
session ids never leave the server and no client can follow a reader from article to article.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from importlib import import_module

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib import auth
from django.core import signing
from django.utils.crypto import constant_time_compare, salted_hmac

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


@functools.lru_cache(maxsize=4)
def _keys(secret: str) -> tuple[bytes, bytes]:
    """The reader-id keys of a secret: one for the site-wide id, one to derive each room's."""
    return (
        hashlib.sha256(secret.encode()).digest(),
        hashlib.sha256(("presence.reader.room:" + secret).encode()).digest(),
    )


def _reader_keys() -> tuple[bytes, bytes]:
    return _keys(app_settings.READER_SECRET or ("presence.reader:" + settings.SECRET_KEY))


def reader_id(identity: str, room: str | None = None) -> str:
    """Opaque, stable, non-reversible id of an identity, safe to broadcast: in ``room``, the
    id other readers of that room see (a different one in every room); without, the site-wide
    id the reader alone is told (``hello.reader``), which is no room's id."""
    site, rooms_key = _reader_keys()
    if room is None:
        key = site
    else:
        key = hmac.new(rooms_key, room.encode(), hashlib.sha256).digest()
    return hmac.new(key, identity.encode(), hashlib.sha256).digest()[:12].hex()


# -- identity tokens ---------------------------------------------------------------------
#
# A token names a user, a digest of the user's session auth hash when it was made (a password
# change makes it stale, as it logs out Django's sessions) and the Django session it was made
# for, encrypted: ``identify`` refuses it once that session has ended (logout), its user is
# gone or inactive, or its hash no longer matches, exactly as Django refuses the session
# cookie. The session key is encrypted because the page's JavaScript sees the token, and the
# key is what an HttpOnly cookie keeps from it: a keystream of HMAC-SHA256 blocks (a PRF in
# counter mode) under a random nonce, then the whole payload signed (``django.core.signing``).
# Every key derives from the secret that signed the token, so that a token lives through a
# rotation of SECRET_KEY that lists the old key in SECRET_KEY_FALLBACKS, as Django's sessions do.

# A token is about 210 characters with database or cache sessions; with signed-cookie sessions
# (whose key is the session itself) about 450 for a bare sign-in, growing with the session's data.
TOKEN_MAX_LENGTH = 2048
_NONCE = 16


def _secrets() -> list[str]:
    """The secrets a token may have been made with: SECRET_KEY first, then its fallbacks."""
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())]


def _stream(nonce: bytes, length: int, secret: str) -> bytes:
    key = hashlib.sha256(("presence.token.session:" + secret).encode()).digest()
    blocks = (hmac.new(key, nonce + n.to_bytes(4, "big"), hashlib.sha256).digest() for n in range(length // 32 + 1))
    return b"".join(blocks)[:length]


def _seal(session_key: str, secret: str) -> str:
    nonce = secrets.token_bytes(_NONCE)
    plain = session_key.encode()
    sealed = bytes(a ^ b for a, b in zip(plain, _stream(nonce, len(plain), secret), strict=True))
    return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def _open(sealed: str, secret: str) -> str:
    raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    nonce, body = raw[:_NONCE], raw[_NONCE:]
    if len(nonce) < _NONCE or not body:
        raise ValueError("sealed session too short")
    return bytes(a ^ b for a, b in zip(body, _stream(nonce, len(body), secret), strict=True)).decode()


def _auth_digest(auth_hash: str, secret: str) -> str:
    return salted_hmac("presence.token.auth", auth_hash, secret=secret).hexdigest()[:32]


def make_token(user: object, session: object) -> str:
    """A signed, expiring token that lets a page re-key its connection to this user, valid
    while ``session`` (the request's Django session, which signed the user in) is."""
    session_key = getattr(session, "session_key", None)
    if not session_key:
        raise ValueError("an identity token needs the signed-in request's saved session")
    secret = settings.SECRET_KEY
    payload = {"u": str(user.pk), "h": _auth_digest(user.get_session_auth_hash(), secret),
               "s": _seal(session_key, secret)}
    return signing.dumps(payload, key=secret, salt=app_settings.TOKEN_SALT, compress=False)


def _session_user(session_key: str, pk: str, digest: str, secret: str) -> bool:
    """Whether the session still signs in user ``pk`` with the auth hash the token was made
    with (under ``secret``, the key that signed the token). Read-only: unlike
    ``django.contrib.auth.get_user`` it never flushes or cycles the session, which belongs to the
    browser's cookie, not to this check."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        session_pk = store[auth.SESSION_KEY]
        backend_path = store[auth.BACKEND_SESSION_KEY]
    except KeyError:
        return False  # signed out, expired or never there
    if str(session_pk) != pk or backend_path not in settings.AUTHENTICATION_BACKENDS:
        return False
    try:
        user = auth.load_backend(backend_path).get_user(auth.get_user_model()._meta.pk.to_python(pk))
    except Exception:  # a pk the user model cannot take
        return False
    if user is None:  # deleted, or refused by the backend (inactive)
        return False
    current = user.get_session_auth_hash()
    stored = store.get(auth.HASH_SESSION_KEY) or ""
    hashes = [current, *user.get_session_auth_fallback_hash()]
    if not any(constant_time_compare(stored, h) for h in hashes):
        return False
    # The user's hash under the token's secret is the current one, or a fallback after a rotation.
    return any(constant_time_compare(digest, _auth_digest(h, secret)) for h in hashes)


_session_user_async = database_sync_to_async(_session_user)


def _unsign(token: object) -> tuple[str, str, str, str]:
    """The (user pk, auth digest, session key, secret that signed it) of a token; raises InvalidToken."""
    if not isinstance(token, str) or not token or not token.isascii():
        raise InvalidToken("token must be a non-empty string")
    if len(token) > TOKEN_MAX_LENGTH:
        raise InvalidToken(f"token longer than {TOKEN_MAX_LENGTH} characters")
    for secret in _secrets():
        try:
            data = signing.loads(token, key=secret, fallback_keys=[], salt=app_settings.TOKEN_SALT,
                                 max_age=app_settings.TOKEN_MAX_AGE)
        except signing.SignatureExpired as exc:
            raise InvalidToken("token expired") from exc
        except signing.BadSignature:
            continue
        break
    else:
        raise InvalidToken("token signature is invalid")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("u", "h", "s")):
        raise InvalidToken("token payload is invalid")
    try:
        session_key = _open(data["s"], secret)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidToken("token payload is invalid") from exc
    return data["u"], data["h"], session_key, secret


async def identity_from_token(token: object) -> str:
    """The ``user:<pk>`` identity a token vouches for, checked against the database (its
    session, user and password hash); raises InvalidToken."""
    pk, digest, session_key, secret = _unsign(token)
    if not await _session_user_async(session_key, pk, digest, secret):
        raise InvalidToken("token's sign-in has ended")
    return for_user(pk)
