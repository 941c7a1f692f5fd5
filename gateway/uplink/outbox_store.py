"""The outbox's SQL, run only in its writer thread (gateway/uplink/outbox.py drives it).

One connection, held EXCLUSIVE (a second gateway on the same file fails
loudly). Each call is one transaction; the results carry the depth, size and
oldest row so the event loop never reads the database itself.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Callable, NamedTuple

from .config import OutboxConfig
from .errors import OutboxError

PRIO_TELEMETRY = 0  # dropped first when over a size cap
PRIO_EVENT = 1
PRIO_STATE = 2  # availability, command responses

_AGE_PAGE = 1000  # rows examined per step of the age cap
_AGE_CHECK_S = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL    NOT NULL,
    prio    INTEGER NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL
);
-- Size caps drop the oldest telemetry first: find it without scanning the table.
CREATE INDEX IF NOT EXISTS outbox_prio ON outbox (prio, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


Pending = tuple[float, int, int, int, str, bytes]  # created, prio, qos, retain, topic, payload
Drop = tuple[str, int, int, list[int]]  # reason, telemetry, events, dropped ids
Victim = tuple[int, int, int]  # id, prio, bytes


class Row(NamedTuple):
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Result(NamedTuple):
    first_id: int
    rows: int
    depth: int
    bytes: int
    oldest: float | None
    drops: list[Drop]




class OutboxStore:
    """The writer thread's half of the outbox; every method runs in that thread."""

    def __init__(self, path: str, config: OutboxConfig, clock: Callable[[], float]):
        self.path = path
        self.config = config
        self._clock = clock
        self.db: sqlite3.Connection | None = None
        self._t_depth = 0
        self._t_bytes = 0
        self._t_last_age_check = 0.0

    def open(self) -> tuple[Result, dict[str, int]]:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, timeout=1.0, isolation_level=None, check_same_thread=False)
            # EXCLUSIVE: one process owns the outbox; a second gateway fails loudly.
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            # a new file gets small pages: a group commit rewrites a few pages, so smaller pages mean
            # fewer bytes per commit (no effect on an existing file, whose page size stays)
            db.execute("PRAGMA page_size=1024")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise OutboxError("%s: SQLite refused WAL mode (got %s)" % (self.path, mode))
            db.execute("PRAGMA synchronous=" + self.config.sqlite_synchronous)
            db.executescript(_SCHEMA)
            db.execute("BEGIN IMMEDIATE")
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise OutboxError("%s: cannot open outbox (%s); is another gateway running?" % (self.path, exc)) from None
        self.db = db
        self._t_depth, self._t_bytes = db.execute(
            "SELECT count(*), coalesce(sum(length(topic) + length(payload)), 0) FROM outbox").fetchone()
        dropped = {name: value for name, value in db.execute("SELECT name, value FROM counters")}
        return Result(0, 0, self._t_depth, self._t_bytes, self._t_oldest(), []), dropped

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def _t_oldest(self) -> float | None:
        assert self.db is not None
        row = self.db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        return None if row is None else row[0]

    def commit(self, batch: list[Pending], acked: list[int]) -> Result:
        db = self.db
        if db is None:
            raise OutboxError("outbox is closed")
        try:
            db.execute("BEGIN IMMEDIATE")
            first = 0
            drops: list[Drop] = []
            try:
                if acked:
                    self._t_delete(acked)
                if batch:
                    db.executemany(
                        "INSERT INTO outbox (created, prio, qos, retain, topic, payload) VALUES (?,?,?,?,?,?)", batch)
                    last = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()[0]
                    first = last - len(batch) + 1
                    self._t_depth += len(batch)
                    self._t_bytes += sum(len(b[4]) + len(b[5]) for b in batch)
                    self._t_enforce_caps(drops)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._t_depth, self._t_bytes = db.execute(
                    "SELECT count(*), coalesce(sum(length(topic) + length(payload)), 0) FROM outbox").fetchone()
                raise
        except sqlite3.Error as exc:
            raise OutboxError("%s: commit failed: %s" % (self.path, exc)) from None
        return Result(first, len(batch), self._t_depth, self._t_bytes, self._t_oldest(), drops)

    def _t_delete(self, ids: list[int]) -> None:
        db = self.db
        assert db is not None
        before = db.total_changes
        ids_sorted = sorted(ids)
        # Acks arrive almost in order: delete contiguous runs as ranges.
        start = prev = ids_sorted[0]
        ranges = []
        for i in ids_sorted[1:]:
            if i != prev + 1:
                ranges.append((start, prev))
                start = i
            prev = i
        ranges.append((start, prev))
        nbytes = 0
        for lo, hi in ranges:
            nbytes += db.execute(
                "SELECT coalesce(sum(length(topic) + length(payload)), 0) FROM outbox WHERE id BETWEEN ? AND ?",
                (lo, hi)).fetchone()[0]
        db.executemany("DELETE FROM outbox WHERE id BETWEEN ? AND ?", ranges)
        self._t_depth -= db.total_changes - before
        self._t_bytes -= nbytes

    def _t_enforce_caps(self, drops: list[Drop]) -> None:
        db = self.db
        assert db is not None
        now = self._clock()
        if now - self._t_last_age_check >= _AGE_CHECK_S:
            self._t_last_age_check = now
            cutoff = now - self.config.max_age_s
            while True:
                old = db.execute(
                    "SELECT id, prio, length(topic) + length(payload) FROM outbox WHERE id IN "
                    "(SELECT id FROM outbox ORDER BY id LIMIT ?) AND created < ?", (_AGE_PAGE, cutoff)).fetchall()
                if not old:
                    break
                self._t_drop("age", old, drops)
                if len(old) < _AGE_PAGE:
                    break
        over_n = self._t_depth - self.config.max_messages
        over_b = self._t_bytes - self.config.max_bytes
        if over_n > 0 or over_b > 0:
            victims = []
            for prio_clause in ("prio = 0", "prio != 0"):
                cur = db.execute(
                    "SELECT id, prio, length(topic) + length(payload) FROM outbox WHERE %s ORDER BY id" % prio_clause)
                for row in cur:
                    if over_n <= 0 and over_b <= 0:
                        break
                    victims.append(row)
                    over_n -= 1
                    over_b -= row[2]
                cur.close()
                if over_n <= 0 and over_b <= 0:
                    break
            self._t_drop("size", victims, drops)

    def _t_drop(self, reason: str, rows: list[Victim], drops: list[Drop]) -> None:
        db = self.db
        assert db is not None
        ids = [r[0] for r in rows]
        db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        tele = sum(1 for r in rows if r[1] == PRIO_TELEMETRY)
        events = len(rows) - tele
        for cls, n in (("telemetry", tele), ("event", events)):
            if n:
                db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", ("%s_%s" % (reason, cls), n))
        self._t_depth -= len(rows)
        self._t_bytes -= sum(r[2] for r in rows)
        drops.append((reason, tele, events, ids))

    def fetch(self, after: int, limit: int, acked: list[int]) -> tuple[list[Row], Result]:
        db = self.db
        if db is None:
            raise OutboxError("outbox is closed")
        if acked:
            try:
                db.execute("BEGIN IMMEDIATE")
                self._t_delete(acked)
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
        rows = [Row(i, t, p, q, bool(r)) for i, t, p, q, r in db.execute(
            "SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit))]
        return rows, Result(0, 0, self._t_depth, self._t_bytes, self._t_oldest(), [])
