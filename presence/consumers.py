"""The WebSocket endpoint: translates protocol frames to hub calls and domain errors to frames.

Counting, identity, rooms and timing live in the domain modules; this module only
parses, dispatches, and answers (protocol: ``docs/protocol.md``).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from presence import addresses, events, identity, protocol, ratelimit
from presence.conf import app_settings
from presence.connections import TooManyConnections
from presence.errors import PresenceError, RateLimited
from presence.hub import get_hub

logger = logging.getLogger(__name__)

# The scope key under which ``routing.KeepRawSend`` keeps the server's own ``send``.
RAW_SEND = "presence.raw_send"


class PresenceConsumer(AsyncWebsocketConsumer):
    # The process's hub, not each consumer, talks to the channel layer:
    # an alias that names no layer keeps consumers off it.
    channel_layer_alias = "presence-consumers-use-the-hub"

    conn = None
    admission = None  # this connection as counted against its address's caps (hub.admit)

    async def __call__(self, scope, receive, send):
        try:
            await self._serve(scope, receive, send)
        except asyncio.CancelledError:
            # The server is shutting down (Daphne cancels every application).
            await self._leave(events.SHUTDOWN)
            raise
        except Exception:
            # Whatever ends this instance before its `websocket.disconnect` must not leave a
            # phantom reader counted until the silence timeout.
            await self._leave(events.CLOSED)
            raise

    async def _serve(self, scope, receive, send) -> None:
        """Channels' ``AsyncConsumer.__call__`` for a consumer without a channel layer, minus a task
        and an ``asyncio.wait`` per frame (its ``await_many_dispatch``). Frames go out through the
        server's own ``send`` where the stack kept it (``routing.KeepRawSend``), past the middleware's
        wrappers of it: Channels' session middleware inspects the session on every message."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        self._send_frame = scope.get(RAW_SEND, send)
        try:
            while True:
                message = await receive()
                text = message.get("text")
                if text is not None and message.get("type") == "websocket.receive":
                    # Nearly every message: a text frame, handed to ``receive`` as Channels'
                    # ``websocket_receive`` does, minus the two calls between.
                    await self.receive(text)
                else:
                    await self.dispatch(message)
        except StopConsumer:
            pass

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch minus its ``aclose_old_connections`` per message: a thread-pool hop
        per frame, a third of the CPU of a `progress` frame (docs/benchmarks.md). This consumer
        never uses the database itself; the domain modules go through ``database_sync_to_async``,
        which closes stale connections on its own."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.hub = get_hub()
        if self.hub.closing:
            await self.close()  # before accept: HTTP 403; the widget retries, reaching another process
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        session = query.get("session", [None])[0]
        who = identity.from_handshake(self.scope.get("user"), session)
        try:
            self.admission = await self.hub.admit(addresses.from_scope(self.scope), who)
        except TooManyConnections:
            logger.info("presence: handshake refused, too many readers or connections from one address")
            await self.close()  # before accept: HTTP 403
            return
        await self.accept()
        self.conn, online = await self.hub.register(who, send=self._send_text, close=self._close,
                                                    admission=self.admission)
        await self._reply(protocol.hello(self.conn.reader_id, online, self.hub.now_ms(), app_settings.HEARTBEAT))

    async def disconnect(self, code: int) -> None:
        await self._leave(events.CLOSED)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conn is None or self.conn.gone:
            return
        verdict = self.hub.touch(self.conn)
        if verdict == ratelimit.CLOSE:
            await self.hub.unregister(self.conn, events.CLOSED)
            await self.close(protocol.CLOSE_FLOOD)
            return
        try:
            command = protocol.parse(text_data, binary=bytes_data is not None)
        except PresenceError as exc:
            command, error = None, exc
        else:
            error = None
        if verdict == ratelimit.LIMITED:
            error = RateLimited("too many frames; this one was dropped", ref=command and command.ref)
        elif command is not None:
            try:
                if command.type == "progress":  # most frames: no await, so no coroutine for it
                    self.hub.progress(self.conn, command.room, command.position, command.name)
                else:
                    await self.dispatch_command(command)
            except PresenceError as exc:
                exc.ref = command.ref
                error = exc
        if error is not None:
            await self._reply(protocol.error(error))

    async def dispatch_command(self, command: protocol.Command) -> None:
        if command.type == "ping":
            await self._reply(protocol.pong(self.hub.now_ms()))
        elif command.type == "join":
            state = await self.hub.join(self.conn, command.room)
            await self._reply(protocol.room_state(state, you=self.conn.ids[command.room]))
        elif command.type == "leave":
            await self.hub.leave(self.conn, command.room)
        elif command.type == "ranking":
            await self._reply(protocol.ranking(await self.hub.subscribe_ranking(self.conn, command.limit)))
        elif command.type == "identify":
            if command.token is not None:
                who = await identity.identity_from_token(command.token)
            else:
                who = identity.for_session(command.session)
            try:
                online = await self.hub.identify(self.conn, who)
            except TooManyConnections:
                logger.info("presence: identify refused, too many readers from one address")
                await self.hub.unregister(self.conn, events.CLOSED)
                await self.close(protocol.CLOSE_TOO_MANY_READERS)
                return
            await self._reply(protocol.hello(self.conn.reader_id, online, self.hub.now_ms(), app_settings.HEARTBEAT))
            # Protocol 1.1: the reader's id changed in every room it is in; say which it is now.
            for room in sorted(self.conn.rooms):
                state = await self.hub.room_state(room)
                await self._reply(protocol.room_state(state, you=self.conn.ids[room]))

    async def _leave(self, reason: str) -> None:
        """Stop counting this connection (its reader, its address); safe to call twice."""
        if self.conn is not None:
            await asyncio.shield(self.hub.unregister(self.conn, reason))
        if self.admission is not None:  # refused or closed before it was registered
            await asyncio.shield(self.hub.dismiss(self.admission))

    async def _reply(self, frame: dict) -> None:
        await self._send_text(protocol.dumps(frame))

    async def _send_text(self, text: str) -> None:
        """Send a frame; a client that closed meanwhile is not an error (its `websocket.disconnect`
        follows and counts it out), where the server's exception would end this instance first."""
        try:
            await self._send_frame({"type": "websocket.send", "text": text})
        except Exception:
            logger.debug("presence: send to a closed connection dropped", exc_info=True)

    async def _close(self, code: int) -> None:
        await self.close(code)
