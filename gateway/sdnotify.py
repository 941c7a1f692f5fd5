"""systemd's notify protocol (sd_notify(3)) without a library: one datagram per message.

With `Type=notify` systemd counts the gateway as started only after READY=1,
that is after the links, the uplink and the API socket are up. With
`WatchdogSec=` it restarts the gateway when WATCHDOG=1 stops arriving: the
pings are sent by a task on the daemon's event loop, so a loop that is stuck
(a blocking call, a busy loop) stops them and systemd restarts the process.
STATUS= shows in `systemctl status park-gateway`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Mapping

__all__ = ["Supervisor", "notify", "watchdog_interval"]

log = logging.getLogger("park.sdnotify")

STATUS_EVERY_S = 30.0


def notify(message: str, env: Mapping[str, str] = os.environ) -> bool:
    """Send one notify message ("READY=1", "WATCHDOG=1", "STATUS=..."); False when not under systemd."""
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall(message.encode())
    return True


def watchdog_interval(env: Mapping[str, str] = os.environ) -> float | None:
    """Half of systemd's WatchdogSec (as sd_watchdog_enabled(3) advises), or None without a watchdog."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.01, int(usec) / 2e6)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number; no watchdog pings", usec)
        return None


def status_line(st: dict) -> str:
    dev = st["devices"]
    clock = st.get("clock", {})
    return "STATUS=%d of %d devices online, backbone %s, clock %s" % (
        dev["online"], dev["total"], "connected" if st["backbone"].get("connected") else "DISCONNECTED",
        "synchronised" if clock.get("synchronised") else "NOT synchronised (devices get no time)")


class Supervisor:
    """`async with Supervisor(daemon): await daemon.run()` - READY, watchdog pings and STATUS for systemd."""

    def __init__(self, daemon, env: Mapping[str, str] = os.environ):
        self.daemon = daemon
        self.env = env
        self.interval = watchdog_interval(env)
        self._task: asyncio.Task | None = None
        self._failed = False

    async def __aenter__(self) -> "Supervisor":
        if self.env.get("NOTIFY_SOCKET"):
            self._task = asyncio.create_task(self._run(), name="sdnotify")
        return self

    async def __aexit__(self, *exc) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._send("STOPPING=1")

    def _send(self, message: str) -> None:
        try:
            notify(message, self.env)
        except OSError as e:
            if not self._failed:  # once: systemd went away or the socket is not ours
                self._failed = True
                log.warning("cannot notify systemd on %s: %s", self.env.get("NOTIFY_SOCKET"), e)

    def _status(self) -> None:
        try:
            self._send(status_line(self.daemon.status()))
        except Exception:  # noqa: BLE001 - a status line must never stop the watchdog
            log.exception("status for systemd failed")

    async def _run(self) -> None:
        await self.daemon.ready.wait()
        self._send("READY=1")
        self._status()
        loop = asyncio.get_running_loop()
        every = self.interval or STATUS_EVERY_S
        next_status = loop.time() + STATUS_EVERY_S
        while True:
            if self.interval:
                self._send("WATCHDOG=1")
            if loop.time() >= next_status:
                next_status = loop.time() + STATUS_EVERY_S
                self._status()
            await asyncio.sleep(every)
