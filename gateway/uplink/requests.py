"""Answered backbone request ids, kept across restarts so a request never runs twice.

A small SQLite table next to the outbox (`requests.sqlite` in the state
directory), bounded to the last `limit` requests: a redelivered or re-sent
request id gets its first answer again instead of a second execution, also
after the gateway restarted. A request that was running when the gateway
stopped has no answer; it is answered `stale` and not run again.
"""

from __future__ import annotations

import logging
import os
import sqlite3

from .errors import OutboxError

__all__ = ["RequestLog", "RUNNING", "INTERRUPTED"]

log = logging.getLogger("park.uplink.requests")

RUNNING = 0  # an id taken but not answered yet (the number counts deliveries waiting for its answer)
INTERRUPTED = b""  # taken by an earlier run of the gateway that stopped before answering

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answered (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    id TEXT NOT NULL,
    answer BLOB,
    UNIQUE (topic, id)
)
"""


class RequestLog:
    """``(response topic, request id) -> answer bytes | RUNNING``, the last ``limit`` of them."""

    def __init__(self, path: str | os.PathLike[str], limit: int = 1024) -> None:
        self.path = os.fspath(path)
        self.limit = limit
        self._waiting: dict[tuple[str, str], int] = {}
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            os.chmod(self.path, 0o600)
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: cannot open the request log: {exc}") from None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def get(self, key: tuple[str, str]) -> bytes | int | None:
        """The stored answer; RUNNING plus the deliveries waiting for it; INTERRUPTED; None for a new id."""
        if key in self._waiting:
            return self._waiting[key]
        row = self._db.execute("SELECT answer FROM answered WHERE topic = ? AND id = ?", key).fetchone()
        if row is None:
            return None
        return INTERRUPTED if row[0] is None else bytes(row[0])

    def begin(self, key: tuple[str, str]) -> None:
        """Take an id before running its request (a crash after this never runs it again)."""
        self._waiting[key] = RUNNING
        try:
            self._db.execute("INSERT OR IGNORE INTO answered(topic, id, answer) VALUES (?, ?, NULL)", key)
            self._db.execute("DELETE FROM answered WHERE n <= (SELECT MAX(n) FROM answered) - ?", (self.limit,))
        except sqlite3.Error as exc:  # the request still runs once in this process
            log.error("%s: cannot store request id %s: %s", self.path, key[1], exc)

    def another_delivery(self, key: tuple[str, str]) -> None:
        self._waiting[key] = self._waiting.get(key, RUNNING) + 1

    def finish(self, key: tuple[str, str], answer: bytes) -> int:
        """Store the answer; returns how many more deliveries wait for it."""
        waiting = self._waiting.pop(key, RUNNING)
        try:
            self._db.execute("UPDATE answered SET answer = ? WHERE topic = ? AND id = ?", (answer, *key))
        except sqlite3.Error as exc:
            log.error("%s: cannot store the answer to request %s: %s", self.path, key[1], exc)
        return waiting
