"""A test bed for one virtual board: its flash image and a gateway peer on its link.

`deploy_tree` builds the flash a technician's deploy would write (main.py, /lib packages as
mpy-cross output, /config.json, /key.bin): a board runs under its role's heap budget by
default (sim.vboard), and sources cost a board more heap than the .mpy files deployed. `Peer` is a test peer that plays the gateway over the board's
link UART with the protocol package (it is not the product gateway): it welcomes
hellos, acks events, sends commands and records every uplink message.
The firmware tests and benchmarks/bench_footprint.py use it.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

KEY = bytes(range(32))
T_2026 = 1767225600  # 2026-01-01T00:00:00Z


def vboard_available() -> bool:
    try:
        from sim import mpvm
        from sim import vboard  # noqa: F401
    except ImportError:
        return False
    return mpvm.node_available() and hasattr(vboard, "VirtualBoard")


def write_firmware(dst: Path, role: str, mpy: bool = True) -> Path:
    """The role's files as `park-device deploy` puts them onto a board (.mpy packages, see
    write_mpy); mpy=False: the sources, where the manifests put them."""
    from park_device.manifest import board_files

    if mpy:
        return write_mpy(dst, role)

    for src, dest in board_files(role):
        f = dst / dest.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, f)
    return dst


_BUILDS: dict = {}


def write_mpy(dst: Path, role: str) -> Path:
    """The role's files as `park-device deploy` writes them (park_device.build: .mpy packages,
    /main.py as source); compiled once per role and sources' state in a process."""
    from park_device.build import build, sources

    key = (role, tuple((str(s), s.stat().st_mtime_ns) for s, _, _ in sources(role)))
    arts = _BUILDS.get(key)
    if arts is None:
        arts = _BUILDS[key] = [(a.dest, a.data) for a in build(role)]
    for dest, data in arts:
        f = dst / dest.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    return dst


def deploy_tree(dst: Path, role: str, kid: str, pins: dict, app: dict | None = None,
                rt: dict | None = None, link: dict | None = None, mpy: bool = True) -> Path:
    """Write a board's flash image into dst (an empty directory); mpy=False: the sources."""
    dst.mkdir(parents=True, exist_ok=True)
    write_firmware(dst, role, mpy)
    cfg = {"id": kid, "site": "stadtpark", "role": role,
           "link": dict({"uart": 1, "baud": 115200, "tx": 17, "rx": 16, "hello_max": 4}, **(link or {})),
           "rt": dict({"wdt_ms": 8000}, **(rt or {})), "pins": pins, "app": app or {}}
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "key.bin").write_bytes(KEY)
    return dst


class Peer:
    """Gateway end of one board's link (protocol package over pyserial socket://)."""

    def __init__(self, board, kid: bytes, welcome_time: int | None = T_2026, hb: int = 0, ack_events: bool = True,
                 welcome: bool = True, port=None):
        """welcome_time None: welcome with the board's own clock (a gateway with good time).
        port: the byte stream to the board (read(n), write(b), close()) when it is not the
        link UART: a TcpServerPort (Wi-Fi) or a sim.vboard_ble.BleCentral (BLE)."""
        from protocol import cose, framing
        self.b = board
        self.kid = kid
        self.mac = cose.Mac(KEY)
        if port is None:
            import serial
            port = serial.serial_for_url(board.link_url, timeout=0)
        self.ser = port
        self.de = framing.Deframer()
        self.seq = 1
        self.welcome_time = welcome_time
        self.hb = hb
        self.ack_events = ack_events
        self.welcome = welcome
        self.after_welcome: list[dict] = []
        self.after_welcome_seqs: list[int] = []
        self.up: list[tuple[int, dict]] = []
        self.replies: dict[int, dict] = {}
        self.errors: list[Exception] = []

    def close(self) -> None:
        self.ser.close()

    def send(self, msg: dict, seq: int | None = None) -> int:
        from protocol import codec, cose
        s = self.seq if seq is None else seq
        self.seq = max(self.seq, s + 1)
        self.ser.write(codec.pack(self.mac, cose.DOWN, self.kid, s, msg))
        return s

    def raw(self, data: bytes) -> None:
        self.ser.write(data)

    def pump(self) -> None:
        from protocol import codec, cose, messages
        data = self.ser.read(65536)
        for env, err in self.de.feed(data or b""):
            if err is not None:
                self.errors.append(err)
                continue
            r = codec.open_envelope(env, cose.UP, lambda k: self.mac if k == self.kid else None)
            m = r.msg
            self.up.append((r.seq, m))
            t = m["type"]
            if t == "hello" and self.welcome:
                wt = self.welcome_time if self.welcome_time is not None else int(self.b.unix_time)
                self.send({"type": "welcome", "echo": m["nonce"], "time": wt, "hb": self.hb})
                while self.after_welcome:  # what a gateway queued for a sleeping device
                    self.after_welcome_seqs.append(self.send(self.after_welcome.pop(0)))
            elif t in messages.ACKED_UP and t != "hello" and self.ack_events:
                self.send({"type": "ack", "ref": r.seq})
            elif t in ("ack", "nack"):
                self.replies[m["ref"]] = m

    def run(self, ms: int, step: int = 100) -> None:
        """Advance the board's virtual clock by ms, serving the link in between."""
        left = ms
        while left > 0:
            d = min(step, left)
            self.b.advance(d)
            time.sleep(0.002)
            self.pump()
            left -= d
        time.sleep(0.002)
        self.pump()

    def connect(self, max_ms: int = 10_000) -> None:
        """Run until the board's hello was welcomed (the board's first hello may go out
        before this peer listens, like a UART with nobody on the other end)."""
        spent = 0
        while not any(m["type"] == "hello" for s, m in self.up):
            assert spent < max_ms, "no hello from the board"
            self.run(100)
            spent += 100
        self.run(200)

    def command(self, msg: dict, max_ms: int = 5000) -> dict:
        """Send one command and run until its ack/nack arrives; returns it."""
        s = self.send(msg)
        spent = 0
        while s not in self.replies:
            assert spent < max_ms, f"no answer to {msg}"
            self.run(20, 20)
            spent += 20
        return self.replies.pop(s)

    def of(self, t: str) -> list[dict]:
        return [m for s, m in self.up if m["type"] == t]

    def clear(self) -> None:
        self.up.clear()



class TcpServerPort:
    """A gateway's TCP server end for one Wi-Fi board (a test peer, not the product's
    server): listens on loopback, takes the newest connection, never blocks."""

    def __init__(self) -> None:
        import socket
        self._srv = socket.create_server(("127.0.0.1", 0))
        self._srv.setblocking(False)
        self.address = self._srv.getsockname()[:2]
        self.conn = None
        self.accepts = 0
        self.closes = 0

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self._srv.accept()
            except BlockingIOError:
                return
            c.setblocking(False)
            if self.conn is not None:
                self.conn.close()
            self.conn = c
            self.accepts += 1

    def read(self, n: int = 65536) -> bytes:
        self._accept()
        c = self.conn
        if c is None:
            return b""
        try:
            d = c.recv(n)
        except BlockingIOError:
            return b""
        except OSError:
            d = b""
        if not d:
            c.close()
            self.conn = None
            self.closes += 1
        return d

    def write(self, data: bytes) -> None:
        self._accept()
        if self.conn is not None:
            try:
                self.conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self._srv.close()
