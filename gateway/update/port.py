"""seams.UpdateLink over the gateway's downlink queues and device table (wired by daemon.Parts)."""

from __future__ import annotations

import asyncio
from typing import Mapping

from gateway.downlink import Downlink


class DownlinkPort:
    """What the update service may do with the downlink: send, and look at a device's queue and link."""

    def __init__(self, downlink: Downlink, sessions: Mapping):
        self.downlink = downlink
        self.sessions = sessions

    def send(self, device_id: str, msg: dict, queue_for: float) -> "asyncio.Future[dict]":
        return self.downlink.command(device_id, msg, None, queue_for)

    def backlog(self, device_id: str) -> int:
        s = self.sessions.get(device_id)
        if s is None:
            return 0
        return sum(1 for c in (*s.queue, *s.inflight.values())
                   if not c.future.done() and not c.msg["type"].startswith("update_"))

    def link_name(self, device_id: str) -> str | None:
        """The configured link (a TCP server's or BLE pool's connections are named "link/peer")."""
        s = self.sessions.get(device_id)
        name = getattr(s.link, "name", None) if s is not None else None
        return name.split("/", 1)[0] if name else None

    def reachable(self, device_id: str) -> bool:
        s = self.sessions.get(device_id)
        return s is not None and Downlink.reachable(s)
