# Runs inside MicroPython: boots the real common.runtime against the TEST FAKE machine
# module, with a scripted clock and a gateway peer speaking the real protocol package.
import json
import os

import machine
from protocol import codec, cose, framing
from protocol.replay import ReplayWindow

from common import clock, config
from common.runtime import Runtime
from common.store import Store

KEY = bytes(range(32))
T0 = 1767225600  # 2026-01-01
BASE = {"id": "t001", "site": "stadtpark", "role": "light_pole",
        "link": {"uart": 1, "baud": 115200}, "rt": {"wdt_ms": 4000, "safe_boots": 3, "stable_s": 30},
        "pins": {"led": 2}, "app": {}}

_now = [0]


def _ticks():
    return _now[0]


clock.ticks_ms = _ticks


def rmtree(p):
    try:
        for n in os.listdir(p):
            q = p + "/" + n
            try:
                os.remove(q)
            except OSError:
                rmtree(q)
        os.rmdir(p)
    except OSError:
        pass


def wipe():
    rmtree("/state")
    try:
        os.remove("/config.json")
    except OSError:
        pass
    machine.rtc_dt[:] = [2000, 1, 1, 5, 0, 0, 0, 0]
    machine.rtc_mem[0] = b""
    machine.cause = machine.PWRON_RESET
    del machine.wdt[:]
    del machine.sleeps[:]


def provision(app=None, rt=None, role="light_pole"):
    cfg = json.loads(json.dumps(BASE))
    cfg["role"] = role
    if app:
        cfg["app"] = app
    if rt:
        cfg["rt"].update(rt)
    config.write_json("/config.json", cfg)
    return cfg


class Gateway:
    """The gateway end, built from the protocol package (the same code the gateway uses)."""

    def __init__(self, kid=b"t001"):
        self.kid = kid
        self.mac = cose.Mac(KEY)
        self.seq = 1000
        self.window = ReplayWindow()
        self.deframer = framing.Deframer()
        self.got = []

    def frame(self, msg, seq=None, mac=None, kid=None):
        if seq is None:
            self.seq += 1
            seq = self.seq
        return codec.pack(mac or self.mac, cose.DOWN, kid or self.kid, seq, msg)

    def raw_payload(self, payload):
        """A frame around any payload bytes, authentic but unchecked (to send bad commands)."""
        self.seq += 1
        return framing.encode_frame(cose.seal(self.mac, cose.DOWN, self.kid, self.seq, payload))

    def recv(self, uart):
        """Uplink messages written since the last call, each as (seq, msg)."""
        data = bytes(uart.tx)
        uart.tx[:] = b""
        out = []
        for env, err in self.deframer.feed(data):
            assert err is None, err
            r = codec.open_envelope(env, cose.UP, lambda k: self.mac if k == self.kid else None,
                                    lambda k: self.window)
            out.append((r.seq, r.msg))
        self.got.extend(out)
        return out


class Board:
    """One device: the runtime plus the fake UART; reboot() keeps flash and RTC."""

    def __init__(self, app_cls, gw=None):
        self.app_cls = app_cls
        self.gw = gw or Gateway()
        self.boot()

    def boot(self):
        dev = config.load("/config.json")
        self.rt = Runtime(dev, KEY, Store(), self.app_cls)
        self.uart = machine.uarts[1]
        self.rt.start()

    def reboot(self, cause=machine.SOFT_RESET):
        machine.cause = cause
        self.boot()

    def run(self, ms, step=20):
        """Advance the scripted clock by ms, stepping the runtime like its loop does."""
        end = _now[0] + ms
        while _now[0] < end:
            w = self.rt.step(_now[0])
            _now[0] += max(1, min(w, step))

    def recv(self):
        return self.gw.recv(self.uart)

    def down(self, msg, **kw):
        self.uart.rx.extend(self.gw.frame(msg, **kw))

    def raw(self, data):
        self.uart.rx.extend(data)

    def welcome(self, time=T0, hb=600):
        hellos = [m for s, m in self.recv() if m["type"] == "hello"]
        assert hellos, "no hello sent"
        self.down({"type": "welcome", "echo": hellos[-1]["nonce"], "time": time, "hb": hb})
        self.run(40)
        return self.recv()


def types(msgs):
    return [m["type"] for s, m in msgs]
