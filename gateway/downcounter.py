"""Counter persistence: the gateway's downlink sequence counter and its writer.

A number is used only below a ceiling that is durable in the registry, so a
restart never sends a sequence number twice (SPEC 4.1).
"""

from __future__ import annotations

import concurrent.futures

from gateway.registry import Registry

DOWN_K = 256  # downlink ceiling step (SQLite has no flash wear)


class DownCounter:
    """The gateway's downlink counter, with SeqCounter's guarantee (protocol/replay.py, SPEC 4.1).

    The stored ceiling C means "numbers below C may have been used"; after a
    restart counting resumes at C, so no number is sent twice. Unlike
    SeqCounter, the next ceiling is written by the registry's writer thread while
    half a step of numbers is still left, so the event loop does not wait for
    an fsync; only if that write is still running when the numbers run out does
    take() wait for it.
    """

    __slots__ = ("next", "ceiling", "_writer", "_id", "_k", "_pending", "_pending_to")

    def __init__(self, device_id: str, stored: int | None, writer, k: int = DOWN_K, start: bool = True):
        self._id = device_id
        self._writer = writer
        self._k = k
        self.next = stored or 0
        self.ceiling = self.next
        self._pending: concurrent.futures.Future | None = None
        self._pending_to = 0
        if start:
            self._raise(wait=False)  # start-up does not wait: the first take() waits if it is not durable yet

    @staticmethod
    def start_all(counters: list[DownCounter], writer) -> None:
        """Raise the first ceiling of counters made with start=False in one writer call (the
        daemon's start-up with 10,000 devices: one Future shared, not 10,000)."""
        if not counters:
            return
        for c in counters:
            c._pending_to = max(c.ceiling, c.next) + c._k
        f = writer.store_ceilings([(c._id, c._pending_to) for c in counters])
        for c in counters:
            c._pending = f

    def _raise(self, wait: bool) -> None:
        if self._pending is None:
            self._pending_to = max(self.ceiling, self.next) + self._k
            self._pending = self._writer.store_ceiling(self._id, self._pending_to)
        assert self._pending is not None
        if wait or self._pending.done():
            self._pending.result()  # raises if the disk refused: then nothing is sent
            self.ceiling = self._pending_to
            self._pending = None

    def take(self) -> int:
        n = self.next
        if n >= self.ceiling:
            self._raise(wait=True)
        elif self.ceiling - n <= self._k // 2:
            self._raise(wait=False)
        self.next = n + 1
        return n

    def jump(self, floor: int) -> None:
        if floor > self.next:
            self.next = floor


class SyncWriter:
    """Registry writes in the caller's thread (tools and tests without a daemon)."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def store_ceiling(self, device_id: str, ceiling: int):
        return self.store_ceilings([(device_id, ceiling)])

    def store_ceilings(self, rows: list[tuple[str, int]]):
        f: concurrent.futures.Future = concurrent.futures.Future()
        for device_id, ceiling in rows:
            self.registry.store_ceiling(device_id, ceiling)
        f.set_result(None)
        return f
