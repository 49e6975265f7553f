"""The site-wide count as a process's connections know it: which reading of the store is worth an
`online` frame, and which connections it goes to.

Pure: the hub reads the store, passes the reading and the time, and sends the frames. The rules
(docs/reliability.md, guarantee 5; docs/protocol.md, `online`): a change is sent once it held for
two readings (a departure and an arrival a moment apart change nothing) and an `online` frame
went out at least ``PRESENCE_ONLINE_INTERVAL`` ago; a connection is never sent a count before its `hello`,
which carries one, and never the count it already has.
"""

from __future__ import annotations

import math

from presence.connections import Connection


class OnlineCount:
    def __init__(self):
        self.value: int | None = None  # the count last sent
        self.sent_at = -math.inf  # when it changed last
        self._read: int | None = None  # the loop's last reading
        self._greeted: list[Connection] = []  # `hello` sent since the last `online` frames

    def greeted(self, conn: Connection, value: int) -> None:
        """A connection's `hello` carries ``value``: the next `online` frames bring it up to date."""
        conn.online_sent = value
        self._greeted.append(conn)

    def settled(self, value: int, now: float, interval: float) -> bool:
        """The loop's reading: whether it is worth sending (``recipients``) now, ``interval`` after
        the last change sent."""
        before, self._read = self._read, value
        return value == self.value or (value == before and now >= self.sent_at + interval)

    def recipients(self, value: int, connections, now: float) -> tuple[list[Connection], bool]:
        """Who gets ``value`` now (counted as sent), and whether it is a change. Unchanged, only the
        connections greeted with another value since the last frames."""
        greeted, self._greeted = self._greeted, []
        changed = value != self.value
        stale = [c for c in (connections if changed else greeted)
                 if c.online_sent is not None and c.online_sent != value and not c.gone]
        for conn in stale:
            conn.online_sent = value
        self.value = value
        if changed:
            self.sent_at = now
        return stale, changed
