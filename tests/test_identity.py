"""Identities end with the login, and reader ids differ per room (``presence/identity.py``).

A page's token (``GET /api/presence/token/``) re-keys a WebSocket to its user with ``identify``;
it must stop working when the sign-in it came from does: logout, a password change, the user
deactivated or deleted. The handshake's session cookie is checked by Channels' AuthMiddleware
with the same rules; the tests below prove both.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from presence import identity
from presence.errors import InvalidToken
from presence.routing import websocket_application
from tests.conftest import PatientCommunicator

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
async def hub(clock):
    """The process hub on the memory store alone: identities do not depend on the backend."""
    from presence import rooms
    from presence.hub import Hub, set_hub
    from presence.store.memory import MemoryStore

    rooms.cache_clear()
    made = Hub(store=MemoryStore("identity-test"), autotick=False, clock=clock)
    set_hub(made)
    yield made
    await made.stop()
    set_hub(None)


async def open_socket(session: str, cookie: str | None = None) -> PatientCommunicator:
    headers = [(b"origin", b"http://localhost")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    client = PatientCommunicator(websocket_application(), f"/ws/presence/?session={session}", headers=headers)
    connected, _ = await client.connect()
    assert connected
    await client.receive_json_from()  # hello
    return client


async def identify(client, token: str) -> dict:
    await client.send_json_to({"type": "identify", "token": token})
    return await client.receive_json_from()


def as_user(user) -> str:
    return identity.reader_id(identity.for_user(user.pk))


@sync_to_async
def change_password(user, password: str = "a-new-password") -> None:
    user.set_password(password)
    user.save()


@sync_to_async
def save(user, **fields) -> None:
    for name, value in fields.items():
        setattr(user, name, value)
    user.save()


async def test_a_token_works_while_its_sign_in_lasts(hub, make_user, signed_in_browser):
    user = await make_user("dora")
    _, token = await signed_in_browser(user)
    client = await open_socket("tokenworks01")
    assert (await identify(client, token))["reader"] == as_user(user)
    assert await identity.identity_from_token(token) == identity.for_user(user.pk)
    await client.disconnect()


@pytest.mark.parametrize("ending", ["logout", "password change", "deactivation", "deletion"])
async def test_a_token_is_refused_once_its_sign_in_ended(hub, make_user, signed_in_browser, ending):
    user = await make_user("eve_" + ending.replace(" ", "_"))
    browser, token = await signed_in_browser(user)
    if ending == "logout":
        await sync_to_async(browser.post)("/accounts/logout/")
    elif ending == "password change":
        await change_password(user)
    elif ending == "deactivation":
        await save(user, is_active=False)
    else:
        await sync_to_async(user.delete)()
    client = await open_socket("tokenended01")
    reply = await identify(client, token)
    assert (reply["type"], reply.get("code")) == ("error", "invalid_token"), reply
    (conn,) = hub.connections
    assert conn.identity == "anon:tokenended01"
    with pytest.raises(InvalidToken):
        await identity.identity_from_token(token)
    await client.disconnect()


async def test_a_password_changed_in_the_same_session_ends_the_token_too(hub, make_user, signed_in_browser):
    """Django keeps the session that changed the password signed in (``update_session_auth_hash``);
    the token, bound to the old password's hash, still ends: the page gets a new one."""
    user = await make_user("fay")
    browser, token = await signed_in_browser(user)

    def change_in_session():  # what Django's PasswordChangeView does
        from django.contrib.auth import update_session_auth_hash
        from django.test import RequestFactory

        request = RequestFactory().get("/")
        request.session, request.user = browser.session, user
        user.set_password("n3w-Pa55word!")
        user.save()
        update_session_auth_hash(request, user)
        request.session.save()
        browser.cookies["sessionid"] = request.session.session_key

    await sync_to_async(change_in_session)()
    client = await open_socket("samesession1")
    reply = await identify(client, token)
    assert (reply["type"], reply.get("code")) == ("error", "invalid_token"), reply
    fresh = (await sync_to_async(browser.get)("/api/presence/token/")).json()["token"]
    assert (await identify(client, fresh))["reader"] == as_user(user)  # still signed in: a new token works
    await client.disconnect()


async def test_a_token_for_a_user_that_does_not_exist_is_refused(hub, make_user, signed_in_browser):
    """A token names its user by pk; with that user gone and the pk reused by nobody, or by
    somebody else, it vouches for no one."""
    user = await make_user("gil")
    _, token = await signed_in_browser(user)
    pk = user.pk
    await sync_to_async(get_user_model().objects.filter(pk=pk).delete)()
    client = await open_socket("nosuchuser1")
    reply = await identify(client, token)  # nobody has that pk
    assert (reply["type"], reply.get("code")) == ("error", "invalid_token"), reply
    await sync_to_async(get_user_model().objects.create_user)("impostor", "i@example.com", "pw", pk=pk)
    reply = await identify(client, token)  # somebody else has it now
    assert (reply["type"], reply.get("code")) == ("error", "invalid_token"), reply
    await client.disconnect()


async def test_the_handshake_cookie_is_checked_against_the_password_and_the_active_flag(hub, make_user, user_cookie):
    """Channels' AuthMiddleware verifies the session's auth hash and the user as Django does: a
    session cookie from before a password change, or of a deactivated user, is anonymous."""
    user = await make_user("hal")
    cookie = await user_cookie("hal")
    client = await open_socket("cookiecheck1", cookie)
    assert {c.identity for c in hub.connections} == {identity.for_user(user.pk)}
    await client.disconnect()
    await change_password(user)
    client = await open_socket("cookiecheck2", cookie)
    assert {c.identity for c in hub.connections} == {"anon:cookiecheck2"}
    await client.disconnect()
    cookie = await user_cookie("hal")
    await save(user, is_active=False)
    client = await open_socket("cookiecheck3", cookie)
    assert {c.identity for c in hub.connections} == {"anon:cookiecheck3"}
    await client.disconnect()


def test_a_token_hides_the_session_key_from_the_page(db, django_user_model):
    """The page's JavaScript sees the token; the HttpOnly session cookie's key must not be in it."""
    import base64

    from django.test import Client

    user = django_user_model.objects.create_user("ivy", password="pw")
    browser = Client()
    browser.force_login(user)
    token = browser.get("/api/presence/token/").json()["token"]
    key = browser.session.session_key
    payload = token.split(":", 1)[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode("latin-1")
    assert key not in token and key not in decoded
    assert user.get_session_auth_hash() not in decoded


# -- reader ids ------------------------------------------------------------------------------------


def test_reader_ids_differ_per_room_and_the_site_id_is_no_rooms(settings):
    who = "anon:someone0001"
    site = identity.reader_id(who)
    in_rooms = {room: identity.reader_id(who, room) for room in ("article:1", "article:2", "post:1")}
    assert len(set(in_rooms.values())) == 3 and site not in in_rooms.values()
    assert in_rooms["article:1"] == identity.reader_id(who, "article:1")  # stable within a room
    assert all(len(rid) == 24 and int(rid, 16) >= 0 for rid in [site, *in_rooms.values()])
    settings.PRESENCE_READER_SECRET = "another secret"
    assert identity.reader_id(who, "article:1") != in_rooms["article:1"]


# -- tokens across secret rotations and session engines ---------------------------------------------


async def test_a_token_lives_through_a_secret_key_rotation_while_the_old_key_is_a_fallback(
        hub, make_user, signed_in_browser, settings):
    """Django keeps sessions signed in while a rotated-out SECRET_KEY is listed in
    SECRET_KEY_FALLBACKS; a page's token (signed, its session key encrypted and its password
    digest keyed, all under the old key) lives as long, and ends when the old key is dropped."""
    user = await make_user("kai")
    _, token = await signed_in_browser(user)
    old = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-rotated-secret-key-" + "k" * 40, [old]
    client = await open_socket("rotatedkey01")
    assert (await identify(client, token))["reader"] == as_user(user)
    settings.SECRET_KEY_FALLBACKS = []
    reply = await identify(client, token)
    assert (reply["type"], reply.get("code")) == ("error", "invalid_token"), reply
    await client.disconnect()


@pytest.mark.parametrize("engine", ["db", "cache", "signed_cookies"])
async def test_tokens_of_every_session_engine_fit_and_end_with_the_password(
        hub, make_user, signed_in_browser, settings, engine):
    """Signed-cookie sessions make the longest tokens (the session key is the session itself):
    within the limit for a sign-in, and bound to the password like the others."""
    settings.SESSION_ENGINE = f"django.contrib.sessions.backends.{engine}"
    user = await make_user(f"mo_{engine}")
    _, token = await signed_in_browser(user)
    assert len(token) <= (identity.TOKEN_MAX_LENGTH if engine == "signed_cookies" else 300), len(token)
    client = await open_socket(f"engine{engine}"[:20])
    assert (await identify(client, token))["reader"] == as_user(user)
    await change_password(user)
    reply = await identify(client, token)
    assert (reply["type"], reply.get("code")) == ("error", "invalid_token"), reply
    await client.disconnect()
