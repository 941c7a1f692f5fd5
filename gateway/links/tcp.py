"""TCP links: a server that Wi-Fi devices connect to, and a client to one bench device.

TcpServerLink (`listen = "HOST:PORT"`): many devices, one connection each (docs/gateway.md "Links").
TcpLink (`url = "tcp://HOST:PORT"` or pyserial's `socket://`): the gateway connects to one byte
stream, such as a virtual board's link port or a serial-to-TCP bridge on a bench.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from urllib.parse import urlsplit

from protocol.cpython import Deframer  # the host deframer: whole frames split out in C

from gateway.links.base import Link

log = logging.getLogger("park.link")

MAX_BACKLOG = 256 * 1024
READ_SIZE = 2048  # ~55 frames a read of a shared stream: other links' frames wait for at most that much work
BUSY_READ_SIZE = 512  # while the gateway sheds (its loop runs late): ~14 frames, so a pre-light waits less
POLL_S = 0.005
# a device that lost power leaves a half-open connection: probe after 60 s quiet, give up after 3 x 10 s
KEEPALIVE = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))


class TcpLink(Link):
    """One byte stream carrying many devices: what it reads is served a slice at a time.

    An asyncio.Protocol: a read with no backlog before it is served at once, in the loop's
    I/O callback (a pole's motion frame is not left waiting for a task step); a read larger
    than a slice (READ_SIZE, BUSY_READ_SIZE while the gateway sheds) keeps its rest as the
    link's backlog, the transport stops reading (the kernel holds what follows, its window
    slows the sender) and the next slice runs after the loop has polled again and served
    the links that became readable: a flooded stream costs another link at most one slice.
    """

    kind = "tcp"

    def __init__(self, name, url, on_envelope, on_error, reconnect_max=30.0):
        super().__init__(name, on_envelope, on_error, reconnect_max)
        u = urlsplit(url)
        if u.scheme not in ("tcp", "socket") or not u.hostname or not u.port:
            raise ValueError("link %s: %r is not tcp://HOST:PORT" % (name, url))
        self.url = url
        self.host, self.port = u.hostname, u.port
        self._transport: asyncio.Transport | None = None
        self._buf = b""  # read, not yet served: self._buf[self._pos:]
        self._pos = 0
        self._next: asyncio.TimerHandle | None = None

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        transport, stream = await loop.create_connection(lambda: _Stream(self, loop), self.host, self.port)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._up()
        p = self.pressure
        if p is not None:
            p.attach(self)  # paused at once while the gateway is over its mark
        try:
            try:
                await stream.closed
            finally:
                while self.backlog:
                    await asyncio.sleep(POLL_S)  # what the peer sent before it closed is served first
        finally:
            if p is not None:
                p.detach(self)
            if self._next is not None:
                self._next.cancel()
                self._next = None
            self._transport = None
            self._buf, self._pos = b"", 0
            transport.close()

    @property
    def backlog(self) -> int:
        """Bytes read and not yet served."""
        return len(self._buf) - self._pos

    def _received(self, data: bytes) -> None:
        if self._pos < len(self._buf):
            self._buf = self._buf[self._pos:] + data  # only when a read raced a pause: rare
        else:
            self._buf = data
        self._pos = 0
        if self._next is None:
            self._serve()

    def _serve(self) -> None:
        """One slice of the backlog; the rest after the loop's next poll (a timer due now runs after the I/O)."""
        self._next = None
        t = self._transport
        if t is None:
            return
        p = self.pressure
        go = p is None or p.may_read(self)  # paused: only a latency link within its allowance reads on
        if go:
            size = BUSY_READ_SIZE if p is not None and p.shedding else READ_SIZE
            end = self._pos + size
            chunk = self._buf[self._pos:end] if self._pos or end < len(self._buf) else self._buf
            self._pos = min(end, len(self._buf))
            go = self.feed(chunk)  # feed() asks the pressure, which may pause this link
        if self._transport is not t:
            return  # the stream ended inside feed
        more = self._pos < len(self._buf)
        if not more:
            self._buf, self._pos = b"", 0
        if more or not go:
            if t.is_reading():
                t.pause_reading()
            if more and go:
                loop = asyncio.get_running_loop()
                self._next = loop.call_at(loop.time(), self._serve)
        elif not t.is_reading() and not t.is_closing():
            t.resume_reading()

    def pause_reading(self) -> None:
        """Backpressure: nothing more is served or read until resume_reading()."""
        t = self._transport
        if t is not None and not t.is_closing() and t.is_reading():
            t.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and self._next is None:
            loop = asyncio.get_running_loop()
            self._next = loop.call_at(loop.time(), self._serve)  # the backlog first, then the transport

    def write(self, frame: bytes) -> None:
        t = self._transport
        if t is None or t.is_closing():
            self.counters["tx_dropped"] += 1
            return
        if t.get_write_buffer_size() > MAX_BACKLOG:
            self.counters["tx_dropped"] += 1  # the peer stopped reading: do not grow without bound
            return
        t.write(frame)
        self.counters["tx_frames"] += 1

    def info(self) -> dict:
        d = super().info()
        d["url"] = self.url
        return d


class _Stream(asyncio.Protocol):
    """TcpLink's transport callbacks."""

    def __init__(self, link: TcpLink, loop: asyncio.AbstractEventLoop):
        self.link = link
        self.closed = loop.create_future()

    def connection_made(self, transport) -> None:
        self.link._transport = transport  # before any data_received

    def data_received(self, data: bytes) -> None:
        self.link._received(data)

    def eof_received(self) -> bool:
        return False  # close: the peer is gone

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            if exc is None:
                self.closed.set_result(None)
            else:
                self.closed.set_exception(exc)


class Connection(asyncio.Protocol):
    """One device's TCP connection to a TcpServerLink: its own deframer, and the link the sessions write to.

    Anonymous until the sessions accept an authentic frame on it (they return the sender's kid);
    then bound to that device, and a newer connection bound to the same device replaces it.
    """

    def __init__(self, server: "TcpServerLink"):
        self.server = server
        self.name = server.name
        self.counters = server.counters
        self.deframer = Deframer()
        self.transport: asyncio.Transport | None = None
        self.kids: set[bytes] = set()
        self.peer = ""
        self._timer: asyncio.TimerHandle | None = None

    @property
    def reachable(self) -> bool:
        """False once closed: the device's commands wait (queue_for) for its next connection."""
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = "%s:%s" % (peer[0], peer[1])
        self.name = "%s/%s" % (self.server.name, self.peer)
        if not self.server._admit(self):
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for opt, v in KEEPALIVE:
                if hasattr(socket, opt):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), v)
        self._timer = asyncio.get_running_loop().call_later(self.server.auth_timeout, self._auth_expired)
        if self.server.pressure is not None:
            self.server.pressure.attach(self)  # paused at once while the gateway is over its mark

    def data_received(self, data: bytes) -> None:
        srv = self.server
        srv.counters["rx_bytes"] += len(data)
        n = 0
        for env, err in self.deframer.feed(data):
            n += 1
            if err is not None:
                srv._on_error(self, err)
                continue
            srv.counters["rx_frames"] += 1
            kid = srv._on_envelope(self, env)
            if kid:
                if kid not in self.kids:
                    srv._bind(self, kid)
            elif not self.kids:
                srv.counters["stranger_frames"] += 1  # dropped by the sessions; counted here per connection kind
        if srv.pressure is not None:
            srv.pressure.check(self, n, len(data))

    def pause_reading(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing() and t.is_reading():
            t.pause_reading()

    def resume_reading(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing() and not t.is_reading():
            t.resume_reading()

    def _auth_expired(self) -> None:
        self._timer = None
        if not self.kids and self.transport is not None:
            self.server.counters["auth_timeouts"] += 1
            log.info("link %s: %s sent no authentic frame within %.1f s; closed", self.server.name, self.peer,
                     self.server.auth_timeout)
            self.transport.abort()

    def write(self, frame: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            self.counters["tx_dropped"] += 1
            return
        if t.get_write_buffer_size() + len(frame) > self.server.write_queue:
            self.counters["tx_dropped"] += 1  # the device stopped reading: its queue stays bounded
            return
        t.write(frame)
        self.counters["tx_frames"] += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.server.pressure is not None:
            self.server.pressure.detach(self)
        self.transport = None
        self.server._gone(self)


class TcpServerLink(Link):
    """Devices connect to us (Wi-Fi poles and lockers): one Connection per device, each with its own deframer.

    Each connection is the link its device's downlink goes out on. A connection
    with no authentic frame within `auth_timeout` is closed; frames from it are
    counted as `stranger_frames` (the sessions drop them unanswered). At most
    `max_clients` connections at once: when full, a new one takes the place of the
    oldest anonymous one, and is refused only when all are authenticated. Each
    queues at most `write_queue` bytes.
    """

    kind = "tcp-server"

    def __init__(self, name, listen: tuple[str, int], on_envelope, on_error, reconnect_max=30.0, *,
                 auth_timeout=10.0, max_clients=256, write_queue=65536):
        super().__init__(name, on_envelope, on_error, reconnect_max)
        self.host, self.port = listen
        self.auth_timeout = auth_timeout
        self.max_clients = max_clients
        self.write_queue = write_queue
        self.conns: set[Connection] = set()
        self.anonymous: dict[Connection, None] = {}  # not yet authentic, oldest first
        self.by_kid: dict[bytes, Connection] = {}

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self._accept, self.host, self.port, reuse_address=True)
        if self.port == 0:
            self.port = server.sockets[0].getsockname()[1]
        self._up()
        try:
            await asyncio.Future()  # serve until cancelled
        finally:
            server.close()
            for c in list(self.conns):
                c.close()

    def _accept(self) -> Connection:
        return Connection(self)

    def _admit(self, conn: Connection) -> bool:
        """Full: the oldest anonymous connection makes room (strangers cannot lock devices out), else refuse."""
        if len(self.conns) >= self.max_clients:
            if not self.anonymous:
                self.counters["refused_connections"] += 1
                return False
            oldest = next(iter(self.anonymous))
            self.counters["evicted_anonymous"] += 1
            self._gone(oldest)
            oldest.close()
        self.conns.add(conn)
        self.anonymous[conn] = None
        self.counters["accepted"] += 1
        return True

    def _bind(self, conn: Connection, kid: bytes) -> None:
        if conn._timer is not None:
            conn._timer.cancel()
            conn._timer = None
        conn.kids.add(kid)
        self.anonymous.pop(conn, None)
        old = self.by_kid.get(kid)
        self.by_kid[kid] = conn
        if old is not None and old is not conn:
            self.counters["replaced_connections"] += 1  # the device reconnected; the old socket is half-open
            old.kids.discard(kid)
            if not old.kids:
                old.close()

    def _gone(self, conn: Connection) -> None:
        self.conns.discard(conn)
        self.anonymous.pop(conn, None)
        for kid in conn.kids:
            if self.by_kid.get(kid) is conn:
                del self.by_kid[kid]

    def write(self, frame: bytes) -> None:
        """Downlink goes out on the device's Connection; a frame addressed to the listener itself is dropped."""
        self.counters["tx_dropped"] += 1

    def info(self) -> dict:
        d = super().info()
        d.update(listen="%s:%d" % (self.host, self.port), connections=len(self.conns),
                 authenticated=len(self.by_kid))
        return d
