"""CPython device simulator: a TEST PEER built from protocol.codec, NOT the device firmware.

It speaks the wire protocol the way protocol/SPEC.md says a device does
(hello/welcome/resync, acked events retransmitted with a new seq and the same
eid, commands answered with ack/nack) so the gateway can be tested over real
sockets and ptys and benchmarked at rates a MicroPython VM cannot reach. The
real firmware runs on virtual boards (sim/vboard); this module never stands
in for it in a claim about the firmware.

    link = await SimLink.tcp_server()           # the gateway connects to link.url
    dev = link.add(SimDevice("l001", key, "light_pole"))
    await dev.hello()
    await dev.event({"type": "motion", "count": 1})   # eid/t filled in, retried until acked
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
import time

from protocol import codec, cose, messages
from protocol.cpython import loads as strict_loads
from protocol.errors import ProtocolError
from protocol.framing import Deframer
from protocol.replay import ReplayWindow

_loads = strict_loads  # cbor2 core, deterministic encoding enforced
_COMMANDS = ("time", "light_set", "light_profile", "prelight", "unlock", "config", "reboot")


class SimDevice:
    """One simulated device. `answer(msg)` decides the reply to a command: None = ack, (code, field) = nack,
    "silent" = the reply is lost."""

    def __init__(self, kid: str, key: bytes, role: str, fw: int = 10000, caps: int = 0):
        self.id = kid
        self.kid = kid.encode("ascii")
        self.mac = cose.Mac(key)
        self.role = role
        self.fw = fw
        self.caps = caps
        self.seq = 0
        self.nonce = None
        self.window: ReplayWindow | None = None
        self.welcome: dict | None = None
        self.welcomed = asyncio.Event()
        self.link: "SimLink | None" = None
        self.pending: dict[int, asyncio.Future] = {}
        self.received: list[dict] = []
        self.commands: list[dict] = []
        self.seen_req: set[int] = set()
        self.answer = lambda msg: None
        self.resyncs = 0
        self.on_command = None  # callable(msg) for a benchmark's timing
        self._got = asyncio.Condition()

    # -- sending

    def take(self) -> int:
        n = self.seq
        self.seq += 1
        return n

    def frame(self, msg: dict, seq: int | None = None) -> bytes:
        return codec.pack(self.mac, cose.UP, self.kid, self.take() if seq is None else seq, msg)

    def send(self, msg: dict) -> int:
        seq = self.take()
        self.link.write(codec.pack(self.mac, cose.UP, self.kid, seq, msg))
        return seq

    def lose_counter(self) -> None:
        """Simulate a board that lost its persisted counter (flash wiped): numbering restarts at 0."""
        self.seq = 0

    async def hello(self, timeout: float = 5.0) -> dict:
        """Send hello until welcomed (answers a resync by jumping the counter, as SPEC.md says)."""
        self.welcomed.clear()
        self.window = None
        deadline = time.monotonic() + timeout
        while True:
            self.nonce = secrets.token_bytes(8)
            self.welcomed.clear()
            self.send({"type": "hello", "role": messages.ROLE_IDS[self.role], "fw": self.fw, "caps": self.caps,
                       "nonce": self.nonce})
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("%s: no welcome" % self.id)
            try:
                await asyncio.wait_for(self.welcomed.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                continue
            if self.welcome is not None:
                return self.welcome
            # a resync arrived: counter jumped, send a fresh hello

    async def event(self, msg: dict, retries: int = 8, base: float = 0.2) -> int:
        """Send an acked event; retransmits with a new seq and the same eid until acked. Returns eid."""
        msg = dict(msg)
        seq = self.take()
        msg.setdefault("eid", seq)
        msg.setdefault("t", int(time.time()))
        delay = base
        for _ in range(retries):
            fut = asyncio.get_running_loop().create_future()
            self.pending[seq] = fut
            self.link.write(codec.pack(self.mac, cose.UP, self.kid, seq, msg))
            try:
                await asyncio.wait_for(asyncio.shield(fut), delay)
                return msg["eid"]
            except asyncio.TimeoutError:
                self.pending.pop(seq, None)
                seq = self.take()
                delay = min(delay * 2, 2.0)
        raise TimeoutError("%s: event eid %d never acked" % (self.id, msg["eid"]))

    def event_nowait(self, msg: dict) -> asyncio.Future:
        """Send once; the future resolves with the ack (benchmarks: no retransmission)."""
        seq = self.take()
        msg = dict(msg)
        msg.setdefault("eid", seq)
        msg.setdefault("t", 0)
        fut = asyncio.get_running_loop().create_future()
        self.pending[seq] = fut
        self.link.write(codec.pack(self.mac, cose.UP, self.kid, seq, msg))
        return fut

    # -- receiving

    def on_envelope(self, env: bytes) -> None:
        if self.window is None:
            self._before_welcome(env)
            return
        try:
            r = codec.open_envelope(env, cose.DOWN, lambda k: self.mac if k == self.kid else None,
                                    lambda k: self.window, _loads)
        except ProtocolError:
            if self.link is not None:
                self.link.dropped += 1
            return
        self._handle(r.seq, r.msg)

    def _before_welcome(self, env: bytes) -> None:
        """No replay state yet: only a welcome/resync echoing our nonce counts (SPEC session rule 1)."""
        try:
            e = cose.parse(env)
            e.verify(self.mac, cose.DOWN)
            msg = messages.decode(e.payload, cose.DOWN, _loads)
        except ProtocolError:
            return
        if msg["type"] == "welcome" and msg["echo"] == self.nonce:
            self.window = ReplayWindow(e.seq, 1)
            self.welcome = msg
            self.welcomed.set()
        elif msg["type"] == "resync" and msg["echo"] == self.nonce:
            self.resyncs += 1
            if msg["floor"] > self.seq:
                self.seq = msg["floor"]
            self.welcome = None
            self.welcomed.set()

    def _handle(self, seq: int, msg: dict) -> None:
        t = msg["type"]
        self.received.append(msg)
        if t == "ack" or t == "nack":
            f = self.pending.pop(msg["ref"], None)
            if f is not None and not f.done():
                f.set_result(msg)
            return
        if t in ("welcome", "resync"):
            return  # a stale copy; this session is already welcomed
        if t in _COMMANDS:
            if self.on_command is not None:
                self.on_command(msg)
            if t == "unlock":
                if msg["req"] in self.seen_req:
                    self.send({"type": "ack", "ref": seq})  # retransmitted unlock: ack, do not open again
                    return
                self.seen_req.add(msg["req"])
            self.commands.append(msg)
            a = self.answer(msg)
            if a == "silent":  # the reply is lost on the way (the gateway must retransmit)
                return
            if a is None:
                self.send({"type": "ack", "ref": seq})
            else:
                self.send({"type": "nack", "ref": seq, "code": a[0], "field": a[1]})


class SimLink:
    """A byte stream carrying one or more SimDevices: a TCP server the gateway connects to, or a pty."""

    def __init__(self):
        self.devices: dict[bytes, SimDevice] = {}
        self.deframer = Deframer()
        self.dropped = 0
        self.unsent = 0
        self._write = None
        self.connected = asyncio.Event()
        self._server = None
        self._writer = None
        self.url = ""
        self.master_fd = None
        self.slave_path = ""

    def add(self, dev: SimDevice) -> SimDevice:
        dev.link = self
        self.devices[dev.kid] = dev
        return dev

    def write(self, data: bytes) -> None:
        """Like a UART with nobody listening: bytes sent while no gateway is connected are lost."""
        if self._write is None:
            self.unsent += 1
            return
        self._write(data)

    def feed(self, data: bytes) -> None:
        for env, err in self.deframer.feed(data):
            if err is not None:
                self.dropped += 1
                continue
            try:
                kid = cose.parse(env).kid
            except ProtocolError:
                self.dropped += 1
                continue
            d = self.devices.get(kid)
            if d is not None:
                d.on_envelope(env)

    # -- TCP

    @classmethod
    async def tcp_server(cls, host: str = "127.0.0.1", port: int = 0) -> "SimLink":
        self = cls()
        self._server = await asyncio.start_server(self._accept, host, port)
        p = self._server.sockets[0].getsockname()[1]
        self.url = "tcp://%s:%d" % (host, p)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = writer
        self.deframer.reset()
        self._write = writer.write
        self.connected.set()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                self.feed(data)
        except ConnectionError:
            pass
        finally:
            if self._writer is writer:
                self._write = None
                self._writer = None
                self.connected.clear()
            writer.close()

    @classmethod
    async def tcp_client(cls, host: str, port: int, latency: float = 0.0) -> "SimLink":
        """A Wi-Fi device's side: its own connection to the gateway's TCP server, `latency` s added each way."""
        self = cls()
        reader, writer = await asyncio.open_connection(host, port)
        self._writer = writer
        out = _Delayed(writer.write, latency)
        back = _Delayed(self.feed, latency)
        self._write = out.put
        self.connected.set()

        async def pump():
            try:
                while data := await reader.read(65536):
                    back.put(data)
            except ConnectionError:
                pass
            finally:
                self._write = None
                self.connected.clear()

        self._reader_task = asyncio.create_task(pump())
        return self

    def drop_connection(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()

    # -- pty (a serial port with no hardware)

    @classmethod
    def pty(cls) -> "SimLink":
        self = cls()
        self.open_pty()
        return self

    def open_pty(self) -> str:
        import tty

        master, slave = os.openpty()
        tty.setraw(slave)
        self.slave_path = os.ttyname(slave)
        self._slave_fd = slave  # kept open so the master sees no hang-up before the gateway opens it
        os.set_blocking(master, False)
        self.master_fd = master
        asyncio.get_running_loop().add_reader(master, self._pty_readable)
        self._write = self._pty_write
        self.deframer.reset()
        return self.slave_path

    def _pty_readable(self) -> None:
        try:
            data = os.read(self.master_fd, 65536)
        except OSError:
            return
        if data:
            self.feed(data)

    def _pty_write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master_fd, view)
                view = view[n:]
            except BlockingIOError:
                time.sleep(0.001)

    def unplug(self) -> None:
        """Close the pty like a board pulled from USB: the gateway's reads fail with EIO."""
        if self.master_fd is not None:
            asyncio.get_running_loop().remove_reader(self.master_fd)
            os.close(self.master_fd)
            os.close(self._slave_fd)
            self.master_fd = None
            self._write = None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._writer is not None:
            self._writer.close()
        self.unplug()


class _Delayed:
    """Hands each item to `fn` `delay` s after it was put, in order (a radio hop's latency)."""

    def __init__(self, fn, delay: float):
        self.fn = fn
        self.delay = delay
        self.items: collections.deque = collections.deque()
        self.timer = None

    def put(self, item) -> None:
        if not self.delay:
            self.fn(item)
            return
        loop = asyncio.get_running_loop()
        self.items.append((loop.time() + self.delay, item))
        if self.timer is None:
            self.timer = loop.call_at(self.items[0][0], self._due)

    def _due(self) -> None:
        self.timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self.items and self.items[0][0] <= now:
            self.fn(self.items.popleft()[1])
        if self.items:
            self.timer = loop.call_at(self.items[0][0], self._due)
