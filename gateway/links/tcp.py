"""TCP byte stream (tcp://HOST:PORT or pyserial's socket://HOST:PORT): virtual boards and Wi-Fi devices."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

from gateway.links.base import Link

MAX_BACKLOG = 256 * 1024


class TcpLink(Link):
    kind = "tcp"

    def __init__(self, name, url, on_envelope, on_error, reconnect_max=30.0):
        super().__init__(name, on_envelope, on_error, reconnect_max)
        u = urlsplit(url)
        if u.scheme not in ("tcp", "socket") or not u.hostname or not u.port:
            raise ValueError("link %s: %r is not tcp://HOST:PORT" % (name, url))
        self.url = url
        self.host, self.port = u.hostname, u.port
        self._writer: asyncio.StreamWriter | None = None

    async def _session(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writer = writer
        self._up()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                self.feed(data)
        finally:
            self._writer = None
            writer.close()

    def write(self, frame: bytes) -> None:
        w = self._writer
        if w is None or w.is_closing():
            self.counters["tx_dropped"] += 1
            return
        if w.transport.get_write_buffer_size() > MAX_BACKLOG:
            self.counters["tx_dropped"] += 1  # the peer stopped reading: do not grow without bound
            return
        w.write(frame)
        self.counters["tx_frames"] += 1

    def info(self) -> dict:
        d = super().info()
        d["url"] = self.url
        return d
