"""The locker firmware, unmodified, on a virtual board in genuine MicroPython.

Each test deploys what `park-device deploy` puts on a real locker (mpy-cross .mpy
packages + /main.py), boots it on sim/vboard, drives door switches and the token
reader, and talks the real protocol over the board's link UART (pyserial socket://)
as the gateway would. Lock pulses are measured from recorded pin edges on the
board's virtual clock. The only double is the reader's wire (see _WIRE) until the
virtual board can feed a non-link UART itself.
"""

import base64
import contextlib
import json
import shutil
import time
from pathlib import Path

import pytest

from sim import mpvm, vboard

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware"

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup"),
]

import serial  # noqa: E402

from protocol import cbor, codec, cose, framing, messages, names, token  # noqa: E402
from protocol.cose import Mac  # noqa: E402

LINK_KEY = bytes(range(32))
BOOKING_KEY = bytes(range(100, 132))
KID = b"k001"
NOW = 1_790_000_000
PINS = {"lock1": 12, "door1": 13, "lock2": 14, "door2": 15, "reader": {"uart": 2, "tx": 17, "rx": 16}}
ACCESS = {v: k for k, v in names.ACCESS.items()}
ALARM = {v: k for k, v in names.ALARMS.items()}


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    """What `park-device deploy` writes to a locker: .mpy packages (mpy-cross) and /main.py."""
    from park_device import build

    out = tmp_path_factory.mktemp("locker-build")
    files = {}
    for i, art in enumerate(build.build("locker")):
        p = out / ("%d.bin" % i)
        p.write_bytes(art.data)
        files[art.dest] = p
    assert "/lib/locker/app.mpy" in files and "/main.py" in files
    return files


class Gateway:
    """The gateway end of the link, just enough protocol for a test: welcome, acks, commands."""

    def __init__(self, board, hb=3600):
        self.board = board
        self.hb = hb
        self.ser = serial.serial_for_url(board.link_url, timeout=0)
        self.mac = Mac(LINK_KEY)
        self.deframer = framing.Deframer()
        self.seq = 1
        self.online = True
        self.received = []  # (seq, msg) in arrival order
        self.hellos = 0

    def close(self):
        self.ser.close()

    def send(self, msg):
        return self.send_payload(messages.encode(msg))

    def send_payload(self, payload):
        """An authentic frame around any payload (also one the schema would refuse)."""
        seq = self.seq
        self.seq += 1
        self.ser.write(framing.encode_frame(cose.seal(self.mac, cose.DOWN, KID, seq, payload)))
        return seq

    def _read(self):
        """Take everything the device sent during the last advance (it is already on its way)."""
        quiet = 0
        while quiet < 2:
            data = self.ser.read(4096)
            if data:
                quiet = 0
                for env, err in self.deframer.feed(data):
                    assert err is None, err
                    r = codec.open_envelope(env, cose.UP, lambda k: self.mac if k == KID else None)
                    self.received.append((r.seq, r.msg))
                    self._answer(r.seq, r.msg)
            else:
                quiet += 1
                time.sleep(0.005)

    def _answer(self, seq, msg):
        if not self.online:
            return
        t = msg["type"]
        if t == "hello":
            self.hellos += 1
            self.send({"type": "welcome", "echo": msg["nonce"], "time": int(self.board.unix_time), "hb": self.hb})
        elif t in messages.ACKED_UP:
            self.send({"type": "ack", "ref": seq})

    def run(self, ms, step=500):
        """Advance the board's clock by ms, answering the device as we go."""
        self._read()
        left = ms
        while left > 0:
            self.board.advance(min(step, left))
            left -= step
            self._read()

    def run_until(self, pred, max_ms, step=500):
        """Advance until pred() holds (checked after each step); fail after max_ms of board time."""
        spent = 0
        self._read()
        while not pred():
            assert spent < max_ms, "not reached within %d ms of board time" % max_ms
            self.run(step, step)
            spent += step

    def msgs(self, *types):
        return [m for _, m in self.received if not types or m["type"] in types]

    def events(self):
        """Distinct events by eid (the device may retransmit), in first-arrival order."""
        seen = {}
        for _, m in self.received:
            if "eid" in m and m["eid"] not in seen:
                seen[m["eid"]] = m
        return list(seen.values())

    def answer_to(self, ref):
        for _, m in self.received:
            if m["type"] in ("ack", "nack") and m["ref"] == ref:
                return m
        return None


APP = {"comps": 2, "open_max_s": 60, "window_s": 10}


@contextlib.contextmanager
def provisioned(firmware, flash, app=APP, pins=PINS, hb=3600):
    """A provisioned locker, doors closed, link up (welcome done): (board, gateway)."""
    flash.mkdir()
    (flash / "key.bin").write_bytes(LINK_KEY)
    (flash / "booking.key").write_bytes(BOOKING_KEY)
    b = vboard.VirtualBoard(firmware_files=firmware, flash_dir=flash, record_pins=True, start_time=NOW,
                            name="locker")
    b.start()  # not provisioned yet (no /config.json): the runtime waits for a technician
    gw = None
    try:
        for name in pins:
            if name.startswith("door"):
                b.set_pin(pins[name], 0)  # doors closed (the switch pulls the line low)
        cfg = {"id": "k001", "site": "stadtpark", "role": "locker", "link": {"uart": 1},
               "rt": {"wdt_ms": 8000}, "pins": pins, "app": app}
        b.write_flash("config.json", json.dumps(cfg))
        b.reset()
        gw = Gateway(b, hb)
        gw.run_until(lambda: gw.hellos >= 1, 5000, step=200)
        gw.run(1000)
        b.clear_events()
        yield b, gw
    finally:
        if gw is not None:
            gw.close()
        b.stop()
        shutil.rmtree(flash, ignore_errors=True)


@pytest.fixture
def locker(firmware, tmp_path):
    with provisioned(firmware, tmp_path / "flash") as bg:
        yield bg


READER_UART = PINS["reader"]["uart"]


# TEST DOUBLE for the reader's wire only, used until sim/vboard can feed a non-link UART
# from the host (`uart_write`): through the board's real raw REPL (park-device's console
# path) it gives the simulated machine.UART a host-fed receive buffer that any()/read()
# serve first. The firmware's UART reads, reader parser, token check, pulse and audit
# run unchanged.
_WIRE = """import machine
U = machine.UART
if not hasattr(U, '_host_rx'):
    U._host_rx = {}
    U._hw_any = U.any
    U._hw_read = U.read
    def _any(self):
        return len(U._host_rx.get(self._id, b'')) + U._hw_any(self)
    def _read(self, n=-1):
        q = U._host_rx.get(self._id, b'')
        if not q:
            return U._hw_read(self, n)
        k = len(q) if n is None or n < 0 else min(n, len(q))
        U._host_rx[self._id] = q[k:]
        return q[:k]
    U.any = _any
    U.read = _read
"""


def _present(b, *lines):
    """Present reader lines (reader_line(comp, token) or raw bytes) on the reader UART."""
    data = b"".join(lines)
    if hasattr(b, "uart_write"):
        b.uart_write(READER_UART, data)
        return
    from park_device.board import Board

    with Board.open(b.console_pty, timeout=10, soft_reset=False) as con:
        con.exec(_WIRE + "U._host_rx[%d] = U._host_rx.get(%d, b'') + %r\n" % (READER_UART, READER_UART, data))


def reader_line(comp, raw):
    return b"%d %s\n" % (comp, base64.b64encode(raw))


PIN_STEP = 20
"""Advance in steps this small where a pulse length is measured: the board stamps a pin
edge with the time its advance() step began, not the firmware's time of the write."""


def _pulses(b, pin):
    """[(start_ms, on_ms)] of the pin's high pulses from recorded edges (+-PIN_STEP)."""
    out, t1 = [], None
    for e in b.events("pin"):
        if e["pin"] != pin:
            continue
        if e["value"] == 1 and t1 is None:
            t1 = e["t_ms"]
        elif e["value"] == 0 and t1 is not None:
            out.append((t1, e["t_ms"] - t1))
            t1 = None
    if t1 is not None:
        out.append((t1, None))
    return out


def test_gateway_unlock_pulses_once_and_is_acked(locker):
    b, gw = locker
    ref = gw.send({"type": "unlock", "comp": 2, "req": 4711, "reason": "support"})
    gw.run(1000, step=PIN_STEP)
    gw.run(2000)
    assert gw.answer_to(ref) == {"type": "ack", "ref": ref}
    p = _pulses(b, PINS["lock2"])
    assert len(p) == 1 and p[0][1] is not None and 600 - PIN_STEP <= p[0][1] <= 620 + PIN_STEP  # pulse_ms 600
    assert _pulses(b, PINS["lock1"]) == []
    ev = [m for m in gw.events() if m["type"] == "access"]
    assert [(m["comp"], m["result"], m["token"]) for m in ev] == [(2, ACCESS["ok_command"], 4711)]
    # a retransmitted unlock (same req, new seq) is acked but never opens again
    ref2 = gw.send({"type": "unlock", "comp": 2, "req": 4711, "reason": "support"})
    gw.run(8000)
    assert gw.answer_to(ref2)["type"] == "ack"
    assert len(_pulses(b, PINS["lock2"])) == 1
    # also after a reset (e.g. a brown-out before the gateway saw the ack)
    b.reset()
    gw.run(3000)
    ref3 = gw.send({"type": "unlock", "comp": 2, "req": 4711, "reason": "support"})
    gw.run(3000)
    assert gw.answer_to(ref3)["type"] == "ack"
    assert len(_pulses(b, PINS["lock2"])) == 1


def test_unlock_out_of_range_is_nacked_and_nothing_moves(locker):
    b, gw = locker
    ref = gw.send({"type": "unlock", "comp": 3, "req": 1, "reason": ""})
    ref_bad = gw.send_payload(cbor.dumps([messages.TYPES["unlock"], 0, 2, ""]))  # outside the protocol schema
    gw.run(1000)
    assert gw.answer_to(ref) == {"type": "nack", "ref": ref, "code": messages.E_BAD_VALUE, "field": "comp"}
    nk = gw.answer_to(ref_bad)
    assert nk["type"] == "nack" and nk["code"] == messages.E_MALFORMED and nk["field"] == "comp"
    assert b.events("pin") == []
    assert b.state()["state"] == "running"


def test_door_opened_without_unlock_is_tamper(locker):
    b, gw = locker
    for _ in range(3):  # contact bounce shorter than debounce_ms (50): nothing
        b.set_pin(PINS["door1"], 1)
        b.advance(10)
        b.set_pin(PINS["door1"], 0)
        b.advance(10)
    gw.run(1000)
    assert gw.events() == []
    b.set_pin(PINS["door1"], 1)
    gw.run(1000)
    ev = [(m["type"], m.get("comp"), m.get("open"), m.get("authorized"), m.get("code")) for m in gw.events()]
    assert ev == [("door", 1, True, False, None), ("alarm", 1, None, None, ALARM["tamper"])]


def test_authorized_open_close_and_open_too_long(locker):
    b, gw = locker
    gw.send({"type": "unlock", "comp": 1, "req": 9, "reason": ""})
    gw.run(1000)
    b.set_pin(PINS["door1"], 1)
    gw.run(1000)
    got = [(m["type"], m.get("open"), m.get("authorized")) for m in gw.events()]
    assert got == [("access", None, None), ("door", True, True)]
    gw.run(61000, step=5000)  # open_max_s = 60
    al = [m for m in gw.events() if m["type"] == "alarm"]
    assert [(m["code"], m["comp"]) for m in al] == [(ALARM["door_open_too_long"], 1)] and al[0]["value"] >= 60
    b.set_pin(PINS["door1"], 0)
    gw.run(1000)
    last = gw.events()[-1]
    assert (last["type"], last["open"], last["authorized"]) == ("door", False, True)


def test_events_kept_while_gateway_away_and_across_reboot(locker):
    b, gw = locker
    gw.online = False
    for _ in range(3):  # three tamper openings while nobody listens
        b.set_pin(PINS["door2"], 1)
        gw.run(500)
        b.set_pin(PINS["door2"], 0)
        gw.run(500)
    b.reset()  # and the board reboots before the gateway is back
    gw.received.clear()
    gw.online = True
    gw.run_until(lambda: len(gw.events()) >= 9, 30000)
    gw.run(2000)
    ev = gw.events()
    doors = [(m["comp"], m["open"]) for m in ev if m["type"] == "door"]
    assert doors == [(2, True), (2, False)] * 3
    assert [m["code"] for m in ev if m["type"] == "alarm"] == [ALARM["tamper"]] * 3
    # delivered once each (same eid on every retransmission) and retired from the audit
    gw.received.clear()
    gw.run(30000, step=3000)
    assert [m for m in gw.msgs() if m["type"] in ("door", "alarm")] == []
    tele = gw.msgs("locker")
    gw.send({"type": "reboot", "delay": 0})
    gw.run(3000)
    tele = gw.msgs("locker")
    assert tele and tele[-1]["pending"] == 0 and tele[-1]["open"] == 0


def test_pulse_bound_holds_against_config_and_reset_mid_pulse(locker):
    b, gw = locker
    ref = gw.send({"type": "config", "values": {"pulse_ms": 60000}})
    gw.run(500)
    assert gw.answer_to(ref) == {"type": "nack", "ref": ref, "code": messages.E_BAD_VALUE, "field": "pulse_ms"}
    ref = gw.send({"type": "config", "values": {"pulse_ms": 1500}})
    gw.run(500)
    assert gw.answer_to(ref)["type"] == "ack"
    gw.send({"type": "unlock", "comp": 1, "req": 1, "reason": ""})
    gw.run(2000, step=PIN_STEP)
    gw.run(2000)
    (start, on), = _pulses(b, PINS["lock1"])
    assert 1500 - PIN_STEP <= on <= 1520 + PIN_STEP  # the configured on-time, ended by the firmware
    # a second unlock while the coil rests is refused busy; the gateway retries later
    ref = gw.send({"type": "unlock", "comp": 1, "req": 2, "reason": ""})
    gw.run(500)
    assert gw.answer_to(ref)["code"] == messages.E_BUSY
    gw.run(4000)
    gw.send({"type": "unlock", "comp": 1, "req": 3, "reason": ""})
    gw.run(200)
    assert b.pin(PINS["lock1"]) == 1
    b.clear_events()
    b.reset()  # the board resets while the coil is energised
    gw.run(2000)
    st = b.state()
    # a reset releases the GPIO (None: not driven since boot); the firmware re-takes it low
    assert st["pins"].get(str(PINS["lock1"])) in (None, 0)
    assert st["pin_modes"][str(PINS["lock1"])]["mode"] == "out"
    assert [e for e in b.events("pin") if e["value"] == 1] == []


def test_tokens_at_the_reader(locker):
    b, gw = locker
    t = int(b.unix_time)
    good = token.issue(BOOKING_KEY, "k001", 1, t - 60, t + 3600, 1001)
    _present(b, reader_line(1, good))
    gw.run(1000)
    assert len(_pulses(b, PINS["lock1"])) == 1
    cases = [
        (1, good, "replayed", 1001),
        (2, token.issue(bytes(32), "k001", 2, t - 60, t + 3600, 1002), "forged", 0),
        (2, token.issue(BOOKING_KEY, "k001", 2, t - 60, t - 1, 1003), "expired", 1003),
        (2, token.issue(BOOKING_KEY, "k001", 1, t - 60, t + 3600, 1004), "wrong_compartment", 1004),
        (2, token.issue(BOOKING_KEY, "k002", 2, t - 60, t + 3600, 1005), "wrong_locker", 1005),
    ]
    _present(b, *[reader_line(comp, raw) for comp, raw, _, _ in cases])
    gw.run_until(lambda: len(gw.events()) >= 7, 30000)
    gw.run(1000)
    acc = [(m["comp"], m["result"], m["token"]) for m in gw.events() if m["type"] == "access"]
    want = [(1, ACCESS["ok_token"], 1001)] + [(c, ACCESS[r], tid) for c, _, r, tid in cases]
    assert acc == want
    assert [m["code"] for m in gw.events() if m["type"] == "alarm"] == [ALARM["lockout"]]  # 5th failure
    fresh = token.issue(BOOKING_KEY, "k001", 2, t - 60, t + 3600, 1006)
    _present(b, reader_line(2, fresh))  # locked out: even a valid token is refused, and not burned
    gw.run(1000)
    assert gw.events()[-1]["result"] == ACCESS["locked_out"]
    assert _pulses(b, PINS["lock2"]) == []
    gw.run(130000, step=10000)  # lockout_s default 120
    _present(b, reader_line(2, fresh))
    gw.run(1000)
    assert gw.events()[-1]["result"] == ACCESS["ok_token"] and len(_pulses(b, PINS["lock2"])) == 1


def test_used_token_remembered_across_reboot_and_bad_lines(locker):
    b, gw = locker
    t = int(b.unix_time)
    good = token.issue(BOOKING_KEY, "k001", 2, t - 60, t + 3600, 77)
    _present(b, reader_line(2, good))
    gw.run(1000)
    b.reset()
    gw.run(3000)
    _present(b, reader_line(2, good), b"2 !!not base64!!\n", b"x" * 500 + b"\n",
             reader_line(2, token.issue(BOOKING_KEY, "k001", 2, t + 600, t + 3600, 78)))
    gw.run_until(lambda: len(gw.events()) >= 5, 30000)
    gw.run(1000)
    acc = [(m["result"], m["token"]) for m in gw.events() if m["type"] == "access"]
    assert acc == [(ACCESS["ok_token"], 77), (ACCESS["replayed"], 77), (ACCESS["malformed"], 0),
                   (ACCESS["malformed"], 0), (ACCESS["not_yet_valid"], 78)]
    assert len(_pulses(b, PINS["lock2"])) == 1


def test_occupancy_sensor_reported_in_telemetry(firmware, tmp_path):
    pins = dict(PINS, occ1=20, occ2=21)
    with provisioned(firmware, tmp_path / "flash", dict(APP, occupancy=True), pins, hb=60) as (b, gw):
        gw.received.clear()
        b.set_pin(pins["occ2"], 1)  # a parcel placed in compartment 2
        b.set_pin(pins["door1"], 1)
        gw.run(1000)
        t = gw.msgs("locker")
        assert t and t[-1]["occupied"] == 2  # sent on the change, not only with the heartbeat
        gw.run(60000, step=5000)
        hb = gw.msgs("locker")[-1]
        assert (hb["occupied"], hb["open"], hb["locked"]) == (2, 1, 2)
        assert len(gw.msgs("heartbeat")) >= 1


def test_forged_replayed_or_garbled_unlock_frames_never_open(firmware, tmp_path):
    with provisioned(firmware, tmp_path / "flash", hb=10) as (b, gw):
        payload = messages.encode({"type": "unlock", "comp": 1, "req": 50, "reason": ""})
        forged = framing.encode_frame(cose.seal(Mac(bytes(32)), cose.DOWN, KID, gw.seq, payload))
        gw.seq += 1
        gw.ser.write(forged)
        gw.ser.write(b"\x00garbage\x00" + bytes(range(1, 200)) + b"\x00")
        frame = codec.pack(gw.mac, cose.DOWN, KID, gw.seq, {"type": "unlock", "comp": 2, "req": 51, "reason": ""})
        gw.seq += 1
        gw.ser.write(frame)
        gw.run(11000)
        assert len(_pulses(b, PINS["lock2"])) == 1  # the authentic one
        before = gw.msgs("heartbeat")[-1]["dropped"]
        gw.ser.write(frame)  # the same frame again: a replay
        gw.run(12000)
        assert len(_pulses(b, PINS["lock2"])) == 1 and _pulses(b, PINS["lock1"]) == []
        answers = [m for m in gw.msgs("ack", "nack")]
        assert [m["type"] for m in answers] == ["ack"]  # forged, garbled and replayed frames get no answer
        assert before >= 2 and gw.msgs("heartbeat")[-1]["dropped"] == before + 1  # counted, not crashed
        assert b.state()["boots"] == 2  # the provisioning reset only


def test_used_id_store_is_bounded_and_forgets_expired_tokens(firmware, tmp_path):
    with provisioned(firmware, tmp_path / "flash", dict(APP, used_cap=8, pulse_ms=50)) as (b, gw):
        t = int(b.unix_time)
        for i in range(8):
            _present(b, reader_line(1, token.issue(BOOKING_KEY, "k001", 1, t - 60, t + 30, 100 + i)))
            gw.run(500)
        late = token.issue(BOOKING_KEY, "k001", 1, t - 60, t + 3600, 200)
        _present(b, reader_line(1, late))  # 8 live ids remembered: refused, fail closed
        gw.run(1000)
        assert gw.events()[-1]["result"] == ACCESS["busy"]
        gw.run(40000, step=5000)  # the 8 tokens expired: their ids may go
        _present(b, reader_line(1, late))
        gw.run(1000)
        acc = [(m["result"], m["token"]) for m in gw.events() if m["type"] == "access"]
        assert acc == [(ACCESS["ok_token"], 100 + i) for i in range(8)] + [
            (ACCESS["busy"], 200), (ACCESS["ok_token"], 200)]
        assert len(_pulses(b, PINS["lock1"])) == 9


def test_safe_mode_stays_locked_and_still_audits(firmware, tmp_path):
    with provisioned(firmware, tmp_path / "flash", dict(APP, comps=99)) as (b, gw):  # invalid app config
        faults = [m for m in gw.events() if m["type"] == "fault"]
        assert [m["code"] for m in faults] == [8]  # config fault: defaults, safe mode
        assert gw.msgs("heartbeat")[-1]["status"] & messages.ST_SAFE_MODE
        t = int(b.unix_time)
        ref = gw.send({"type": "unlock", "comp": 1, "req": 1, "reason": ""})
        _present(b, reader_line(1, token.issue(BOOKING_KEY, "k001", 1, t - 60, t + 3600, 5)))
        b.set_pin(PINS["door2"], 1)
        gw.run(3000)
        assert gw.answer_to(ref)["code"] == messages.E_NOT_READY
        ev = [(m["type"], m.get("result", m.get("code", m.get("open")))) for m in gw.events() if m["type"] != "fault"]
        assert sorted(ev) == [("access", ACCESS["busy"]), ("alarm", ALARM["tamper"]), ("door", True)]
        assert b.events("pin") == []
