"""Durable store-and-forward outbox: SQLite in WAL mode, group commit, in-order drain.

One writer thread owns the connection, so a commit (and its fsync) never
blocks the event loop.  Everything appended while a commit runs joins the
next one (group commit); futures resolve in append order once their
transaction is durable.  Rows are read back in id order and deleted only
after the broker acknowledged them (``ack``), in a later transaction.

While the publisher keeps up, committed rows are handed to it from memory;
when a backlog builds (broker away) it falls back to paging from the table.

Caps: ``max_messages``/``max_bytes`` drop the oldest telemetry first, then
the oldest other rows; ``max_age_s`` drops rows older than that.  Every drop
is counted per reason and class in the database (it survives restarts) and
reported through ``on_drop``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import os
import sqlite3
import time
from typing import Callable, NamedTuple

from .config import OutboxConfig
from .errors import OutboxError

__all__ = ["Outbox", "Row", "PRIO_TELEMETRY", "PRIO_EVENT", "PRIO_STATE"]

PRIO_TELEMETRY = 0  # dropped first when over a size cap
PRIO_EVENT = 1
PRIO_STATE = 2  # availability, command responses

_CLASS = {PRIO_TELEMETRY: "telemetry", PRIO_EVENT: "event", PRIO_STATE: "event"}
_MEMORY_ROWS = 20_000  # rows kept for the publisher in memory before paging from disk
_PAGE = 1000
_AGE_CHECK_S = 1.0
_RETRY_S = 0.5  # after a failed commit (disk full, I/O error)
_CLOSE_TIMEOUT_S = 5.0

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


_Pending = tuple[float, int, int, int, str, bytes]  # created, prio, qos, retain, topic, payload
_Drop = tuple[str, int, int, list[int]]  # reason, telemetry, events, dropped ids
_Victim = tuple[int, int, int]  # id, prio, bytes


class Row(NamedTuple):
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class _Result(NamedTuple):
    first_id: int
    rows: int
    depth: int
    bytes: int
    oldest: float | None
    drops: list[_Drop]


class Outbox:
    """See the module docstring.  All public methods are called from the event loop."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: OutboxConfig,
        *,
        clock: Callable[[], float] = time.time,
        on_drop: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.config = config
        self._clock = clock
        self._on_drop = on_drop
        self._exec: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # writer-thread state
        self._db: sqlite3.Connection | None = None
        self._t_depth = 0
        self._t_bytes = 0
        self._t_last_age_check = 0.0
        # loop state
        self._pending: list[_Pending] = []
        self._pending_fut: asyncio.Future[None] | None = None
        self._acked: list[int] = []
        self._busy = False
        self._kick_scheduled = False
        self._mem: collections.deque[Row] = collections.deque()
        self._spilled = True  # start by paging: the table may hold a backlog
        self._loaded_upto = 0  # highest id placed in _mem
        self._fetching = False
        self._generation = 0
        self._wake = asyncio.Event()
        self.depth = 0
        self.bytes = 0
        self._oldest: float | None = None
        self._dropped: dict[str, int] = {}
        self._closed = True

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exec = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="outbox")
        try:
            res, dropped = await self._loop.run_in_executor(self._exec, self._t_open)
        except BaseException:
            self._exec.shutdown(wait=True)
            self._exec = None
            raise
        self._dropped = dropped
        self._closed = False
        self._apply(res)

    async def close(self) -> None:
        """Commit what is pending, then close; rows not yet delivered stay on disk."""
        if self._closed:
            return
        assert self._loop is not None and self._exec is not None
        deadline = self._loop.time() + _CLOSE_TIMEOUT_S
        while (self._busy or self._pending or self._acked) and self._loop.time() < deadline:
            if not self._busy and not self._kick_scheduled:
                self._kick()
            await asyncio.sleep(0.001)
        fut, self._pending_fut, self._pending = self._pending_fut, None, []
        if fut is not None and not fut.done():
            fut.set_exception(OutboxError(f"{self.path}: closed before these messages could be committed"))
        self._closed = True
        self._wake.set()
        await self._loop.run_in_executor(self._exec, self._t_close)
        self._exec.shutdown(wait=True)
        self._exec = None

    # -- writing -------------------------------------------------------------

    def append(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
               prio: int = PRIO_EVENT) -> "asyncio.Future[None]":
        """Queue one message; the returned future resolves once it is committed."""
        if self._closed:
            raise OutboxError("outbox is closed")
        self._pending.append((self._clock(), prio, qos, 1 if retain else 0, topic, payload))
        fut = self._pending_fut
        if fut is None:
            assert self._loop is not None
            fut = self._pending_fut = self._loop.create_future()
        self._schedule()
        return fut

    def ack(self, row_id: int) -> None:
        """The broker acknowledged ``row_id``; delete it with the next transaction."""
        self._acked.append(row_id)
        self._schedule()

    def _schedule(self) -> None:
        if not self._busy and not self._kick_scheduled:
            self._kick_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._kick)

    def _kick(self) -> None:
        self._kick_scheduled = False
        if self._busy or not (self._pending or self._acked) or self._exec is None:
            return
        batch, self._pending = self._pending, []
        acked, self._acked = self._acked, []
        fut, self._pending_fut = self._pending_fut, None
        self._busy = True
        assert self._loop is not None
        job = self._loop.run_in_executor(self._exec, self._t_commit, batch, acked)
        job.add_done_callback(lambda j: self._committed(j, batch, acked, fut))

    def _committed(self, job: "asyncio.Future[_Result]", batch: list[_Pending], acked: list[int],
                   fut: "asyncio.Future[None] | None") -> None:
        self._busy = False
        exc = OutboxError("commit cancelled") if job.cancelled() else job.exception()
        if exc is not None:
            # The batch is NOT stored: its callers learn it and must not ack devices.
            err = exc if isinstance(exc, OutboxError) else OutboxError(f"outbox commit failed: {exc}")
            if fut is not None and not fut.done():
                fut.set_exception(err)
            self._acked[:0] = acked  # deletes are retried; until then a row may be sent twice
            if self._acked or self._pending:
                assert self._loop is not None
                self._kick_scheduled = True
                self._loop.call_later(_RETRY_S, self._kick)
            return
        res = job.result()
        dropped: set[int] = set()
        for d in res.drops:
            dropped.update(d[3])
        if batch and not self._spilled:
            first = res.first_id
            mem = self._mem
            for i, (_, _, qos, retain, topic, payload) in enumerate(batch):
                mem.append(Row(first + i, topic, payload, qos, bool(retain)))
            self._loaded_upto = first + len(batch) - 1
        if dropped and self._mem:
            # Dropped rows still waiting in memory must not be sent after all
            # (one already handed to the broker may still arrive).
            self._mem = collections.deque(r for r in self._mem if r.id not in dropped)
        if len(self._mem) > _MEMORY_ROWS:
            self._spill()
        self._apply(res)
        if fut is not None and not fut.done():
            fut.set_result(None)
        if batch:
            self._wake.set()
        if self._pending or self._acked:
            self._kick()

    def _apply(self, res: _Result) -> None:
        self.depth, self.bytes, self._oldest = res.depth, res.bytes, res.oldest
        for reason, tele, ev, _ids in res.drops:
            for cls, n in (("telemetry", tele), ("event", ev)):
                if n:
                    key = f"{reason}_{cls}"
                    self._dropped[key] = self._dropped.get(key, 0) + n
            if self._on_drop is not None:
                self._on_drop(reason, tele, ev)

    # -- reading -------------------------------------------------------------

    async def take(self, limit: int) -> list[Row]:
        """Up to ``limit`` rows after the last ones taken, oldest first; waits for some."""
        while True:
            if self._closed:
                raise OutboxError("outbox is closed")
            mem = self._mem
            if mem:
                n = min(limit, len(mem))
                return [mem.popleft() for _ in range(n)]
            if self._spilled and not self._fetching:
                self._fetch()
            self._wake.clear()
            await self._wake.wait()

    def take_nowait(self) -> Row | None:
        """The next row if one is in memory (the fast path of the publisher)."""
        mem = self._mem
        return mem.popleft() if mem else None

    def rewind(self) -> None:
        """Forget what was taken but not acked: the next take starts at the oldest row."""
        self._generation += 1
        self._mem = collections.deque()
        self._spilled = True
        self._loaded_upto = 0
        self._fetching = False
        self._wake.set()

    def _spill(self) -> None:
        """Too much waiting in memory: drop it there and page it back from disk."""
        self._loaded_upto = self._mem[0].id - 1
        self._mem = collections.deque()
        self._spilled = True

    def _fetch(self) -> None:
        self._fetching = True
        gen = self._generation
        acked, self._acked = self._acked, []
        assert self._loop is not None and self._exec is not None
        job = self._loop.run_in_executor(self._exec, self._t_fetch, self._loaded_upto, _PAGE, acked)

        def done(j: "asyncio.Future[tuple[list[Row], _Result]]") -> None:
            if gen != self._generation:
                return
            self._fetching = False
            if j.cancelled() or j.exception() is not None:
                self._acked.extend(acked)
                self._loop.call_later(_RETRY_S, self._wake.set)  # type: ignore[union-attr]
                return
            rows, res = j.result()
            self._apply(res)
            if rows:
                self._mem.extend(rows)
                self._loaded_upto = rows[-1].id
            if len(rows) < _PAGE:
                self._spilled = False
            self._wake.set()

        job.add_done_callback(done)

    async def wait_empty(self) -> None:
        while self.depth or self._pending or self._acked or self._busy:
            if not self._busy and (self._pending or self._acked):
                self._kick()
            await asyncio.sleep(0.01)

    # -- status --------------------------------------------------------------

    def oldest_age(self) -> float | None:
        return None if self._oldest is None else max(0.0, self._clock() - self._oldest)

    def dropped_totals(self) -> dict[str, int]:
        return dict(self._dropped)

    # -- writer thread -------------------------------------------------------

    def _t_open(self) -> tuple[_Result, dict[str, int]]:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, timeout=1.0, isolation_level=None, check_same_thread=False)
            # EXCLUSIVE: one process owns the outbox; a second gateway fails loudly.
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise OutboxError(f"{self.path}: SQLite refused WAL mode (got {mode})")
            db.execute(f"PRAGMA synchronous={self.config.sqlite_synchronous}")
            db.executescript(_SCHEMA)
            db.execute("BEGIN IMMEDIATE")
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise OutboxError(f"{self.path}: cannot open outbox ({exc}); is another gateway running?") from None
        self._db = db
        self._t_depth, self._t_bytes = db.execute(
            "SELECT count(*), coalesce(sum(length(topic) + length(payload)), 0) FROM outbox").fetchone()
        dropped = {name: value for name, value in db.execute("SELECT name, value FROM counters")}
        return _Result(0, 0, self._t_depth, self._t_bytes, self._t_oldest(), []), dropped

    def _t_close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _t_oldest(self) -> float | None:
        assert self._db is not None
        row = self._db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        return None if row is None else row[0]

    def _t_commit(self, batch: list[_Pending], acked: list[int]) -> _Result:
        db = self._db
        if db is None:
            raise OutboxError("outbox is closed")
        try:
            db.execute("BEGIN IMMEDIATE")
            first = 0
            drops: list[_Drop] = []
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
            raise OutboxError(f"{self.path}: commit failed: {exc}") from None
        return _Result(first, len(batch), self._t_depth, self._t_bytes, self._t_oldest(), drops)

    def _t_delete(self, ids: list[int]) -> None:
        db = self._db
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

    def _t_enforce_caps(self, drops: list[_Drop]) -> None:
        db = self._db
        assert db is not None
        now = self._clock()
        if now - self._t_last_age_check >= _AGE_CHECK_S:
            self._t_last_age_check = now
            cutoff = now - self.config.max_age_s
            while True:
                old = db.execute(
                    "SELECT id, prio, length(topic) + length(payload) FROM outbox WHERE id IN "
                    "(SELECT id FROM outbox ORDER BY id LIMIT ?) AND created < ?", (_PAGE, cutoff)).fetchall()
                if not old:
                    break
                self._t_drop("age", old, drops)
                if len(old) < _PAGE:
                    break
        over_n = self._t_depth - self.config.max_messages
        over_b = self._t_bytes - self.config.max_bytes
        if over_n > 0 or over_b > 0:
            victims = []
            for prio_clause in ("prio = 0", "prio != 0"):
                cur = db.execute(
                    f"SELECT id, prio, length(topic) + length(payload) FROM outbox WHERE {prio_clause} ORDER BY id")
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

    def _t_drop(self, reason: str, rows: list[_Victim], drops: list[_Drop]) -> None:
        db = self._db
        assert db is not None
        ids = [r[0] for r in rows]
        db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        tele = sum(1 for r in rows if r[1] == PRIO_TELEMETRY)
        events = len(rows) - tele
        for cls, n in (("telemetry", tele), ("event", events)):
            if n:
                db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (f"{reason}_{cls}", n))
        self._t_depth -= len(rows)
        self._t_bytes -= sum(r[2] for r in rows)
        drops.append((reason, tele, events, ids))

    def _t_fetch(self, after: int, limit: int, acked: list[int]) -> tuple[list[Row], _Result]:
        db = self._db
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
        return rows, _Result(0, 0, self._t_depth, self._t_bytes, self._t_oldest(), [])
