"""Durable store-and-forward outbox: SQLite in WAL mode, group commit, in-order drain.

This module is the event-loop state machine; its SQL runs in one writer
thread (gateway/uplink/outbox_store.py).

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
import time
from typing import Callable

from .config import OutboxConfig
from .errors import OutboxError
from .outbox_store import PRIO_EVENT, PRIO_STATE, PRIO_TELEMETRY, OutboxStore, Pending, Result, Row

__all__ = ["Outbox", "Row", "PRIO_TELEMETRY", "PRIO_EVENT", "PRIO_STATE"]

_MEMORY_ROWS = 20_000  # rows kept for the publisher in memory before paging from disk
_PAGE = 1000  # rows paged in from disk at a time
_RETRY_S = 0.5  # after a failed commit (disk full, I/O error)
_CLOSE_TIMEOUT_S = 5.0
_ACKS_ONLY_S = 1.0  # a transaction that only deletes delivered rows waits this long for company

class Outbox:
    """See the module docstring.  All public methods are called from the event loop."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: OutboxConfig,
        *,
        clock: Callable[[], float] = time.time,
        on_drop: Callable[[str, int, int], None] | None = None,
        commit_window_s: float = 0.0,
    ) -> None:
        self.path = os.fspath(path)
        self.commit_window_s = commit_window_s
        self._last_commit = float("-inf")
        self._kick_due = 0.0
        self._kick_handle: asyncio.TimerHandle | None = None
        self.config = config
        self._clock = clock
        self._on_drop = on_drop
        self._exec: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store = OutboxStore(self.path, config, clock)  # used only in the writer thread
        # loop state
        self._pending: list[Pending] = []
        self._pending_fut: asyncio.Future[None] | None = None
        self._acked: list[int] = []
        self._busy = False
        self._committing = 0  # messages in the transaction the writer thread runs now
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
            res, dropped = await self._loop.run_in_executor(self._exec, self._store.open)
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
            fut.set_exception(OutboxError("%s: closed before these messages could be committed" % self.path))
        self._closed = True
        self._wake.set()
        await self._loop.run_in_executor(self._exec, self._store.close)
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
        if self._busy:
            return  # _committed schedules what came meanwhile
        # group commit: at most one transaction per window (deletes alone may wait longer), so a
        # frame costs a share of a few pages instead of a fsync'd transaction of its own
        due = self._last_commit + (self.commit_window_s if self._pending else _ACKS_ONLY_S)
        if self._kick_scheduled:
            if due >= self._kick_due:
                return
            if self._kick_handle is not None:
                self._kick_handle.cancel()
        loop = self._loop
        assert loop is not None
        self._kick_scheduled = True
        self._kick_due = due
        if due > loop.time():
            self._kick_handle = loop.call_at(due, self._kick)
        else:
            self._kick_handle = None
            loop.call_soon(self._kick)

    def _kick(self) -> None:
        self._kick_scheduled = False
        self._kick_handle = None
        if self._busy or not (self._pending or self._acked) or self._exec is None:
            return
        batch, self._pending = self._pending, []
        acked, self._acked = self._acked, []
        fut, self._pending_fut = self._pending_fut, None
        self._busy = True
        self._committing = len(batch)
        assert self._loop is not None
        self._last_commit = self._loop.time()
        job = self._loop.run_in_executor(self._exec, self._store.commit, batch, acked)
        job.add_done_callback(lambda j: self._committed(j, batch, acked, fut))

    def _committed(self, job: "asyncio.Future[Result]", batch: list[Pending], acked: list[int],
                   fut: "asyncio.Future[None] | None") -> None:
        self._busy = False
        self._committing = 0
        exc = OutboxError("commit cancelled") if job.cancelled() else job.exception()
        if exc is not None:
            # The batch is NOT stored: its callers learn it and must not ack devices.
            err = exc if isinstance(exc, OutboxError) else OutboxError("outbox commit failed: %s" % exc)
            if fut is not None and not fut.done():
                fut.set_exception(err)
            self._acked[:0] = acked  # deletes are retried; until then a row may be sent twice
            if self._acked or self._pending:
                assert self._loop is not None
                self._kick_scheduled = True
                self._kick_due = float("-inf")  # new messages do not cut the retry short
                self._kick_handle = self._loop.call_later(_RETRY_S, self._kick)
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
            self._schedule()

    def _apply(self, res: Result) -> None:
        self.depth, self.bytes, self._oldest = res.depth, res.bytes, res.oldest
        for reason, tele, ev, _ids in res.drops:
            for cls, n in (("telemetry", tele), ("event", ev)):
                if n:
                    key = "%s_%s" % (reason, cls)
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
        job = self._loop.run_in_executor(self._exec, self._store.fetch, self._loaded_upto, _PAGE, acked)

        def done(j: "asyncio.Future[tuple[list[Row], Result]]") -> None:
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

    async def in_writer(self, fn: Callable):
        """Run fn(connection) in the writer thread (tests and maintenance; never on the hot path)."""
        assert self._loop is not None and self._exec is not None
        return await self._loop.run_in_executor(self._exec, fn, self._store.db)

    async def wait_empty(self) -> None:
        while self.depth or self._pending or self._acked or self._busy:
            if not self._busy and (self._pending or self._acked):
                self._kick()
            await asyncio.sleep(0.01)

    # -- status --------------------------------------------------------------

    @property
    def uncommitted(self) -> int:
        """Messages appended and not yet durable (waiting for the window, or in the running commit)."""
        return len(self._pending) + self._committing

    @property
    def in_memory(self) -> int:
        """Committed rows waiting in memory for the publisher (at most _MEMORY_ROWS; then they page from disk)."""
        return len(self._mem)

    def oldest_age(self) -> float | None:
        return None if self._oldest is None else max(0.0, self._clock() - self._oldest)

    def dropped_totals(self) -> dict[str, int]:
        return dict(self._dropped)
