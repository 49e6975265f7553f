"""Who follows the live ranking (protocol extension: `ranking` subscriptions), and what each was
sent last, so that a tick's one ranking read goes out only to those whose top rooms changed.

Pure: the hub reads the ranking (``live.alive_ranking``) and sends the frames.
"""

from __future__ import annotations

from typing import Any

from presence.connections import Connection


class RankingFeed:
    def __init__(self):
        self._sent: dict[Connection, tuple[int, list[dict[str, Any]]]] = {}  # limit, entries sent last

    def __len__(self) -> int:
        return len(self._sent)

    def subscribe(self, conn: Connection, limit: int, entries: list[dict[str, Any]]) -> None:
        """``conn`` was sent ``entries``, its top ``limit``; a second subscription replaces the first.
        A connection closed meanwhile (its ranking was being read) subscribes nothing."""
        if not conn.gone:
            self._sent[conn] = (limit, entries)

    def drop(self, conn: Connection) -> None:
        self._sent.pop(conn, None)

    def clear(self) -> None:
        self._sent.clear()

    def widest(self) -> int:
        """The largest limit subscribed: one read serves every subscriber."""
        return max(limit for limit, _ in self._sent.values())

    def changed(self, entries: list[dict[str, Any]]) -> dict[int, list[Connection]]:
        """Given the ranking now (at least ``widest()`` long if there are as many rooms), the
        connections to send it to, by limit: those whose top rooms differ from what they were sent
        last. They are recorded as sent."""
        due: dict[int, list[Connection]] = {}
        for conn, (limit, last) in self._sent.items():
            mine = entries[:limit]
            if mine != last and not conn.gone:
                self._sent[conn] = (limit, mine)
                due.setdefault(limit, []).append(conn)
        return due
