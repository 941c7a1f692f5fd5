"""Downlink commands: a bounded queue per device, retransmissions, deadlines, cancellation.

A command lives from the moment it is asked until its deadline: it is answered
(ack/nack), or it fails once the deadline passes or the retries are used up,
or it is cancelled (its asker went away, or an operator cancelled it). A command
that failed or was cancelled leaves the queue at once and is never sent again,
so nothing is carried out after its asker was told it failed. A command to a
device that is not reachable fails at once unless the asker chose to wait
(`queue_for` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import time
from typing import Mapping

from protocol import messages, names

INFLIGHT = 4  # commands on the air per device at once

_asking: contextvars.ContextVar = contextvars.ContextVar("park_command_options", default=None)


class CommandFailed(Exception):
    """A downlink command was refused (nack) or never answered; `code` names why."""

    def __init__(self, code: str, detail: str = "", field: str = ""):
        super().__init__("%s%s" % (code, ": " + detail if detail else ""))
        self.code = code
        self.detail = detail
        self.field = field


class QueueFull(CommandFailed):
    def __init__(self, device_id: str, n: int):
        super().__init__("busy", "device %s has %d commands queued" % (device_id, n))


@contextlib.contextmanager
def asking(deadline: float | None, queue_for: float | None):
    """Commands queued inside this block (by a control loop on an operator's behalf) get these options."""
    token = _asking.set((deadline, queue_for))
    try:
        yield
    finally:
        _asking.reset(token)


class Command:
    __slots__ = ("id", "msg", "future", "tries", "seq", "timer", "expiry", "asked", "lifetime", "queue_for")

    def __init__(self, cid: str, msg: dict, future: asyncio.Future, asked: float, lifetime: float,
                 queue_for: float):
        self.id = cid
        self.msg = msg
        self.future = future
        self.tries = 0
        self.seq = -1
        self.timer: asyncio.TimerHandle | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.asked = asked  # wall-clock time
        self.lifetime = lifetime  # s from asking to the deadline
        self.queue_for = queue_for

    def stop_timers(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None


class Downlink:
    """The gateway's command queues, over the device sessions in `devices` (id -> DeviceSession)."""

    def __init__(self, cfg, devices: Mapping, counters):
        self.cfg = cfg  # SessionConfig
        self.devices = devices
        self.counters = counters
        self._ids = itertools.count(1)

    def command(self, device_id: str, msg: dict, deadline: float | None = None,
                queue_for: float | None = None) -> asyncio.Future:
        """Queue a downlink command; the future gives the device's ack or raises CommandFailed.

        Cancelling the future cancels the command. See `submit` for the options.
        """
        s = self.devices.get(device_id)
        if s is None:
            f = asyncio.get_running_loop().create_future()
            f.set_exception(CommandFailed("unknown_device", "no device %r" % device_id))
            return f
        messages.encode(msg)  # SchemaError here, naming the field, before anything is queued
        return self.submit(s, msg, deadline, queue_for)

    @staticmethod
    def linked(s) -> bool:
        """The device has a link that can carry a frame now (a BLE or TCP connection says when not)."""
        return s.link is not None and getattr(s.link, "reachable", True)

    @staticmethod
    def reachable(s) -> bool:
        return Downlink.linked(s) and s.online

    def submit(self, s, msg: dict, deadline: float | None = None, queue_for: float | None = None) -> asyncio.Future:
        """Queue `msg` for device session `s`.

        deadline: wall-clock time (time.time()) by which the answer must have come.
        queue_for: seconds the command may wait, also for a device that is not
        reachable now (0 or None: such a device fails the command at once).
        The command ends at the later of the two; with neither, after
        session.command_timeout.
        """
        if deadline is None and queue_for is None:
            deadline, queue_for = _asking.get() or (None, None)
        loop = asyncio.get_running_loop()
        f = loop.create_future()
        queue_for = float(queue_for or 0.0)
        if not queue_for and not self.reachable(s):
            self.counters["command_offline"] += 1
            f.set_exception(CommandFailed("offline", "%s is not reachable now (wait for it with queue_for)" % s.id))
            return f
        if len(s.queue) >= self.cfg.queue:
            self.counters["queue_full"] += 1
            f.set_exception(QueueFull(s.id, len(s.queue)))
            return f
        now = loop.time()
        if deadline is not None:
            lifetime = max(deadline - time.time(), queue_for)
        else:
            lifetime = queue_for or self.cfg.command_timeout
        if lifetime <= 0:
            f.set_exception(CommandFailed("timeout", "%s to %s: its deadline had passed" % (msg["type"], s.id)))
            return f
        c = Command(str(next(self._ids)), msg, f, time.time(), lifetime, queue_for)
        c.expiry = loop.call_at(now + lifetime, self._expire, s, c)
        f.add_done_callback(functools.partial(self._cancelled, s, c))
        s.queue.append(c)
        if s.welcomed and self.linked(s) and len(s.inflight) < INFLIGHT:
            self.pump(s)
        return f

    def pump(self, s) -> None:
        while s.queue and len(s.inflight) < INFLIGHT:
            c = s.queue.popleft()
            if c.future.done():
                continue
            self._transmit(s, c)

    def resend(self, s) -> None:
        """After a fresh hello: what was in flight was lost with the device's replay state."""
        for c in list(s.inflight.values()):
            self._transmit(s, c)

    def _transmit(self, s, c: Command) -> None:
        if c.seq >= 0:
            s.inflight.pop(c.seq, None)
        c.tries += 1
        c.seq = s.send(c.msg)
        s.inflight[c.seq] = c
        sc = self.cfg
        delay = min(sc.retry_base * (2 ** (c.tries - 1)), sc.retry_max)
        if c.timer is not None:
            c.timer.cancel()
        c.timer = asyncio.get_running_loop().call_later(delay, self._retry, s, c)

    def _retry(self, s, c: Command) -> None:
        c.timer = None
        if c.future.done():
            return
        if not self.linked(s):
            # the connection ended (a battery bin went back to sleep): the command waits at the head
            # of the queue for the next one, until its deadline, instead of spending its retries on no link
            if s.inflight.get(c.seq) is c:
                del s.inflight[c.seq]
            c.seq = -1
            s.queue.appendleft(c)
            return
        if c.tries >= self.cfg.retries:
            self.counters["command_timeout"] += 1
            self._fail(s, c, CommandFailed("timeout", "%s to %s: no answer after %d tries"
                                           % (c.msg["type"], s.id, c.tries)))
            return
        self.counters["retransmit"] += 1
        self._transmit(s, c)

    def _expire(self, s, c: Command) -> None:
        c.expiry = None
        if c.future.done():
            return
        self.counters["command_expired"] += 1
        what = "no answer" if c.tries else "device not reachable"
        self._fail(s, c, CommandFailed("timeout", "%s to %s: %s within %.0f s of asking"
                                       % (c.msg["type"], s.id, what, c.lifetime)))

    def _fail(self, s, c: Command, err: CommandFailed) -> None:
        self._end(s, c)
        c.future.set_exception(err)
        if s.queue and s.welcomed and self.linked(s):
            self.pump(s)

    def _end(self, s, c: Command) -> None:
        """The command leaves the queue now and frees its slot; it is never sent again."""
        c.stop_timers()
        if c.seq >= 0 and s.inflight.get(c.seq) is c:
            del s.inflight[c.seq]
        else:
            with contextlib.suppress(ValueError):
                s.queue.remove(c)

    def _cancelled(self, s, c: Command, _f: asyncio.Future) -> None:
        if c.future.cancelled():
            self.counters["command_cancelled"] += 1
            self._end(s, c)
            if s.queue and s.welcomed and self.linked(s):
                self.pump(s)

    def answer(self, s, msg: dict) -> None:
        c = s.inflight.pop(msg["ref"], None)
        if c is None or c.future.done():
            self.counters["stray_answer"] += 1
            return
        c.stop_timers()
        if msg["type"] == "ack":
            c.future.set_result({"device": s.id, "command": c.msg["type"], "result": "ok", "tries": c.tries})
        else:
            code = names.NACK_CODES.get(msg["code"], str(msg["code"]))
            c.future.set_exception(CommandFailed(code, "%s refused by %s" % (c.msg["type"], s.id), msg["field"]))

    def cancel(self, s, command_id: str) -> bool:
        """An operator's cancel: the asker (if still waiting) gets CommandFailed("cancelled")."""
        for c in list(s.inflight.values()) + list(s.queue):
            if c.id == command_id and not c.future.done():
                self.counters["command_cancelled"] += 1
                self._fail(s, c, CommandFailed("cancelled", "%s to %s cancelled" % (c.msg["type"], s.id)))
                return True
        return False

    def fail_all(self, s, err: Exception) -> None:
        for c in list(s.inflight.values()) + list(s.queue):
            c.stop_timers()
            if not c.future.done():
                c.future.set_exception(err)
        s.inflight.clear()
        s.queue.clear()

    @staticmethod
    def pending(s) -> list[dict]:
        """The device's commands not yet answered, for `device ID`."""
        out = []
        for state, cs in (("inflight", s.inflight.values()), ("queued", s.queue)):
            for c in cs:
                if not c.future.done():
                    out.append({"id": c.id, "type": c.msg["type"], "state": state, "tries": c.tries,
                                "asked": c.asked, "deadline": c.asked + c.lifetime,
                                "queue_for": c.queue_for})
        return out
