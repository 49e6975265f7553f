"""Who is here: a process's connections, its readers online and in each room, their sessions.

Pure: no I/O, no clock, no asyncio. Each change (a connection opens or closes, joins or leaves a
room, moves, re-identifies) updates the state at once and returns what the store and the other processes
must hear of it, as effect records. The hub performs them, those of one key in the order returned
(``presence.sequencer``), and reports the store's answers back (``claimed``, ``released``), so it
never re-checks this state after an await: each decision is made once, on the state as it is
(tests/test_membership.py; every interleaving with a real store: tests/test_interleavings.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from presence import events, identity
from presence.connections import Connection
from presence.errors import NotJoined
from presence.local_rooms import LocalRoom, Session
from presence.store import Reader


def claim_key(room: str | None, reader_id: str) -> tuple:
    """The order a reader's claim online (room None) or in a room and its release share."""
    return ("online", reader_id) if room is None else ("room", room, reader_id)


# -- effects: what the hub performs ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClaimOnline:
    """Count the reader online (every tab claims: idempotent per process)."""

    reader_id: str

    @property
    def key(self) -> tuple:
        return claim_key(None, self.reader_id)


@dataclass(frozen=True, slots=True)
class ReleaseOnline:
    """The reader's last tab here closed: drop this process's claim online."""

    reader_id: str

    @property
    def key(self) -> tuple:
        return claim_key(None, self.reader_id)


@dataclass(frozen=True, slots=True)
class Opened:
    """The first reader here entered the room: departures this process has not published yet from
    the room's previous stay here go with the room's own next batch (a reader back cancels its own)."""

    room: LocalRoom


@dataclass(frozen=True, slots=True)
class Enter:
    """A tab's claim of its reader in a room (idempotent per process); ``joined``: the session
    this first tab started. ``carried``: the position came from the reader's previous identity."""

    room: LocalRoom
    session: Session
    carried: bool
    joined: events.ReaderJoined | None

    @property
    def key(self) -> tuple:
        return claim_key(self.room.name, self.session.reader.id)


@dataclass(frozen=True, slots=True)
class Depart:
    """The reader's last tab here left the room: write its last position if ``unwritten``,
    release the claim, then end the session."""

    room: str
    session: Session
    unwritten: bool
    reason: str
    ended_at: int

    @property
    def key(self) -> tuple:
        return claim_key(self.room, self.session.reader.id)

    def ended(self, proc: str) -> events.ReaderLeft:
        s, reader = self.session, self.session.reader
        return events.ReaderLeft(self.room, s.identity, reader.id, reader.name, s.started_at, self.ended_at,
                                 s.furthest, reader.position, self.reason, proc)


@dataclass(frozen=True, slots=True)
class Publish:
    """The room is forgotten here: the other processes' hubs must still hear that these readers left
    it (with this process's next batch)."""

    room: str
    left: set[str]


@dataclass(frozen=True, slots=True)
class Changed:
    """The room's next frame and batch carry a departure."""

    room: LocalRoom


# -- the state ---------------------------------------------------------------------------------
class Membership:
    def __init__(self, proc: str):
        self.proc = proc
        self.connections: set[Connection] = set()
        self.by_reader: dict[str, set[Connection]] = {}  # site-wide reader id -> its tabs here
        self.rooms: dict[str, LocalRoom] = {}

    def open(self, conn: Connection) -> list:
        self.connections.add(conn)
        return self.claim_online(conn)

    def close(self, conn: Connection, reason: str, at_ms: int) -> list | None:
        """Everything the connection held ends (its sessions at ``at_ms``); None if it was closed."""
        if conn.gone:
            return None
        conn.gone = True
        self.connections.discard(conn)
        return self.leave_all(conn, reason, at_ms) + self.release_online(conn)

    def claim_online(self, conn: Connection) -> list:
        """Count the connection's reader online here (a closed connection counts nothing)."""
        if conn.gone:
            return []
        self.by_reader.setdefault(conn.reader_id, set()).add(conn)
        return [ClaimOnline(conn.reader_id)]

    def release_online(self, conn: Connection) -> list:
        rid = conn.reader_id
        tabs = self.by_reader.get(rid)
        if tabs is None or conn not in tabs:
            return []
        tabs.discard(conn)
        if tabs:
            return []
        del self.by_reader[rid]
        return [ReleaseOnline(rid)]

    def rekey(self, conn: Connection, new_identity: str) -> None:
        """A connection re-identified, after ``leave_all`` and ``release_online`` of the old reader."""
        conn.identity = new_identity
        conn.reader_id = identity.reader_id(new_identity)

    def join(self, conn: Connection, room: str, now_ms: int, position: float | None = None,
             name: str | None = None) -> list:
        """Enter a room (a closed connection, or one already there, enters nothing)."""
        if conn.gone or room in conn.rooms:
            return []
        effects: list = []
        local = self.rooms.get(room)
        if local is None:
            local = self.rooms[room] = LocalRoom(room)
            effects.append(Opened(local))
        conn.rooms.add(room)
        rid = conn.ids[room] = identity.reader_id(conn.identity, room)
        tabs = local.members.setdefault(rid, set())
        joined = None
        if not tabs:
            local.sessions[rid] = Session(conn.identity, Reader(rid, name, position, now_ms, now_ms), started_at=now_ms)
            joined = events.ReaderJoined(room, conn.identity, rid, now_ms, self.proc)
        tabs.add(conn)
        effects.append(Enter(local, local.sessions[rid], position is not None, joined))
        return effects

    def leave(self, conn: Connection, room: str, reason: str, ended_at: int) -> list:
        if room not in conn.rooms:
            raise NotJoined("this connection has not joined that room")
        conn.rooms.discard(room)
        rid = conn.ids.pop(room)
        local = self.rooms[room]
        tabs = local.members[rid]
        tabs.discard(conn)
        if tabs:
            return []
        unwritten = rid in local.to_store  # its last position: written before the release
        effects: list = [Depart(room, local.depart(rid), unwritten, reason, ended_at)]
        if not local.members:  # forget the room
            del self.rooms[room]
            effects.append(Publish(room, local.outbox_left))
        return effects

    def leave_all(self, conn: Connection, reason: str, ended_at: int) -> list:
        return [effect for room in list(conn.rooms) for effect in self.leave(conn, room, reason, ended_at)]

    def progress(self, conn: Connection, room: str, position: float, name: str | None,
                 now_ms: int) -> tuple[LocalRoom, Reader]:
        """A reader moved: the room and the reader to announce (written to the store with the next flush)."""
        if room not in conn.rooms:
            raise NotJoined("this connection has not joined that room")
        local = self.rooms[room]
        session = local.sessions[conn.ids[room]]
        reader = session.reader
        reader.position = position
        if name is not None:
            reader.name = name
        reader.updated_at = max(now_ms, reader.updated_at)
        if session.furthest is None or position > session.furthest:
            session.furthest = position
        local.to_store.add(reader.id)
        return local, reader

    def claims(self) -> list[tuple[str, Reader]]:
        """Every reader in a room here, as the heartbeat re-asserts them."""
        return [(room, s.reader) for room, local in self.rooms.items() for s in local.sessions.values()]

    def open_sessions(self) -> list[events.OpenSession]:
        """What every reader here has read so far (a checkpoint's)."""
        return [
            events.OpenSession(room, s.identity, rid, s.reader.name, s.started_at, s.furthest, s.reader.position)
            for room, local in self.rooms.items() for rid, s in local.sessions.items()
        ]

    def positions(self, conn: Connection) -> dict[str, Reader]:
        """Where the connection's reader is in each of its rooms (carried over by a re-identify)."""
        return {room: self.rooms[room].sessions[conn.ids[room]].reader for room in conn.rooms}

    # -- the store's answers -------------------------------------------------------------
    def claimed(self, enter: Enter, stored: Reader | None) -> Reader | None:
        """The store took a session's first claim (``stored``: its record there, None if
        unreachable). Returns the reader to announce; None if the session ended meanwhile (its
        release comes next) or the claim was a further tab's."""
        local, session = enter.room, enter.session
        reader = session.reader
        if enter.joined is None:
            return None
        if self.rooms.get(local.name) is not local or local.sessions.get(reader.id) is not session:
            return None
        if stored is not None:
            if enter.carried and stored.updated_at <= reader.updated_at:
                # Re-identified: carry the position over to the new reader id.
                reader.joined_at = stored.joined_at
                local.to_store.add(reader.id)
            else:
                session.reader = stored  # keep the record another process or tab already made
        session.furthest = session.reader.position
        return session.reader

    def released(self, room: str, reader_id: str) -> list:
        """The store released a reader in a room and it is gone everywhere (or the store did not
        answer): who must hear of it."""
        local = self.rooms.get(room)
        if local is None:  # forgotten here: the other processes, now
            return [Publish(room, {reader_id})]
        if reader_id in local.members:  # a tab here joined it again since
            return []
        local.gone(reader_id)
        return [Changed(local)]

    def holds(self, room: str | None, reader_id: str) -> bool:
        """Whether a local connection holds this reader online (room None) or in the room."""
        if room is None:
            return reader_id in self.by_reader
        return room in self.rooms and reader_id in self.rooms[room].members

    def close_all(self, at_ms: int, reason: str) -> tuple[list[events.ReaderLeft], list[tuple[str, Reader]]]:
        """A shutdown: every connection is gone and every session ends now. Returns the sessions'
        end events and the positions not yet written; the rooms are forgotten."""
        for conn in self.connections:
            conn.gone = True
        ended = [
            Depart(room, s, False, reason, at_ms).ended(self.proc)
            for room, local in self.rooms.items() for s in local.sessions.values()
        ]
        writes = [write for local in self.rooms.values() for write in local.take_writes()]
        self.connections.clear()
        self.rooms.clear()
        return ended, writes
