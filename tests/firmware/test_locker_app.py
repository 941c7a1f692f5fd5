"""The locker App against a fake runtime (same API as common.runtime.Runtime): runs under
CPython (pytest) and again inside genuine MicroPython (test_locker_mp.py).

The fake stands in only for the runtime's link: events land in a list the test acks.
The end-to-end proof with the real runtime and protocol is test_locker_vboard.py.
"""

import os
import sys

if sys.implementation.name == "cpython":
    import tempfile

    _BASE = tempfile.mkdtemp(prefix="locker-app-")
else:
    _BASE = "/tmp_locker_app"
    try:
        os.mkdir(_BASE)
    except OSError:
        pass

from common import config
from common.errors import CommandError
from locker import app, reader
from locker import compartment as actuator  # LockActuator lives with the compartment
from protocol import codes, messages, token

KEY = bytes(range(100, 132))
NOW = 1_790_000_000
_n = [0]


class Pin:
    def __init__(self, v=0):
        self.v = v
        self.high_ms = 0

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = 1 if v else 0


class Uart:
    def __init__(self):
        self.rx = bytearray()

    def any(self):
        return len(self.rx)

    def read(self, n):
        d = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return d


class Hal:
    def __init__(self):
        self.pins = {}
        self.uarts = {"reader": Uart()}

    def has(self, name):
        return name in self.uarts or name in self.pins

    def pin_out(self, name, value=0):
        p = self.pins.setdefault(name, Pin())
        p.value(value)
        return p

    def pin_in(self, name, pull=None):
        return self.pins.setdefault(name, Pin(0))

    def uart(self, name, baud=9600):
        return self.uarts[name]


class Session:
    def __init__(self):
        self.events = []
        self.seq = 100


class FakeRt:
    """common.runtime.Runtime's App-facing API; events are 'sent' by send_pending()."""

    def __init__(self, cfg=None, hal=None):
        self.id = "k001"
        self.hal = hal or Hal()
        self.cfg = config.validate(app.SCHEMA, cfg or {"comps": 2})
        self.session = Session()
        self.t = NOW
        self.ms = 0
        self.logs = []
        self.sent = []

    def send(self, msg):
        messages.encode(msg)
        self.sent.append(msg)

    def now(self):
        return self.t

    def ticks_ms(self):
        return self.ms

    def log(self, text, keep=False):
        self.logs.append(text)

    def event(self, msg, durable=False, on_ack=None):
        if msg.get("t") is None:
            msg["t"] = self.t
        self.session.events.append([msg, [], 0, 0, durable, on_ack])

    def send_pending(self):
        for e in self.session.events:
            if e[0].get("eid") is None:
                e[0]["eid"] = self.session.seq
                self.session.seq += 1
        return [e[0] for e in self.session.events]

    def ack(self, msg):
        for i in range(len(self.session.events)):
            e = self.session.events[i]
            if e[0] is msg:
                self.session.events.pop(i)
                if e[5] is not None:
                    e[5](msg, None)
                return
        raise AssertionError("not pending")


def _setup(cfg=None, key=KEY):
    _n[0] += 1
    d = "%s/b%d" % (_BASE, _n[0])
    os.mkdir(d)
    app.STATE = d + "/state"
    app.KEY_PATH = d + "/booking.key"
    if key is not None:
        with open(app.KEY_PATH, "wb") as f:
            f.write(key)
    rt = FakeRt(cfg)
    a = app.App(rt)
    a.start(False)
    return rt, a


def _run(rt, a, ms, step=10):
    end = rt.ms + ms
    while rt.ms < end:
        a.step(rt.ms)
        for name in rt.hal.pins:
            p = rt.hal.pins[name]
            if name.startswith("lock") and p.v:
                p.high_ms += step
        rt.ms += step
    a.step(rt.ms)


def _types(rt):
    return [(m["type"], m.get("comp"), m.get("result", m.get("code", m.get("open")))) for m in rt.send_pending()]


def _present(rt, comp, raw):
    rt.hal.uarts["reader"].rx.extend(reader.encode_line(comp, raw))


def test_schema_is_valid_for_the_runtime():
    config.check_schema(app.SCHEMA, "app")
    for k in app.SCHEMA:
        assert len(k) <= config.MAX_KEY


def test_token_at_reader_opens_and_is_audited():
    rt, a = _setup()
    _present(rt, 2, token.issue(KEY, "k001", 2, NOW - 5, NOW + 3600, 501))
    _run(rt, a, 2000)
    lock = rt.hal.pins["lock2"]
    assert 0 < lock.high_ms <= rt.cfg["pulse_ms"] + 10 and lock.v == 0
    assert rt.hal.pins["lock1"].high_ms == 0
    assert _types(rt) == [("access", 2, codes.ACC_OK_TOKEN)]
    assert rt.send_pending()[0]["token"] == 501


def test_refusals_reported_with_result_codes_and_lockout_alarm():
    rt, a = _setup({"comps": 2, "max_fail": 3})
    good = token.issue(KEY, "k001", 1, NOW - 5, NOW + 3600, 7)
    _present(rt, 1, good)
    _run(rt, a, 100)
    _present(rt, 1, good)  # replay
    _present(rt, 1, token.issue(bytes(32), "k001", 1, NOW - 5, NOW + 3600, 8))
    _present(rt, 1, token.issue(KEY, "k009", 1, NOW - 5, NOW + 3600, 9))
    _present(rt, 1, good)  # locked out now, even a fresh presentation
    _run(rt, a, 100)
    evs = rt.send_pending()
    res = [(m["type"], m.get("result", m.get("code"))) for m in evs]
    assert res[:4] == [("access", codes.ACC_OK_TOKEN), ("access", codes.ACC_REPLAYED), ("access", codes.ACC_FORGED),
                       ("access", codes.ACC_WRONG_LOCKER)]
    # the rest is delivered once earlier records are acked (a few in flight at a time)
    for m in evs:
        rt.ack(m)
    _run(rt, a, 20)
    res = [(m["type"], m.get("result", m.get("code"))) for m in rt.send_pending()]
    assert res == [("alarm", codes.A_LOCKOUT), ("access", codes.ACC_LOCKED_OUT)]
    for _ in range(50):  # a flood while locked out: counted, not written to flash one by one
        _present(rt, 1, b"garbage")
    _run(rt, a, 100)
    assert a.refused_quietly == 50 and a.audit.next_seq == 6
    assert rt.hal.pins["lock1"].high_ms <= rt.cfg["pulse_ms"] + 10  # opened once only


def test_gateway_unlock_dedupes_req_also_after_reboot():
    rt, a = _setup()
    a.on_command({"type": "unlock", "comp": 1, "req": 77, "reason": "support"})
    _run(rt, a, 5000)
    assert rt.hal.pins["lock1"].high_ms > 0
    first = rt.hal.pins["lock1"].high_ms
    a.on_command({"type": "unlock", "comp": 1, "req": 77, "reason": "support"})
    _run(rt, a, 5000)
    assert rt.hal.pins["lock1"].high_ms == first
    rt.session.events = []
    b = app.App(rt)  # reboot: same flash
    b.start(False)
    b.on_command({"type": "unlock", "comp": 1, "req": 77, "reason": "support"})
    _run(rt, b, 5000)
    assert rt.hal.pins["lock1"].high_ms == first
    assert [m["result"] for m in rt.send_pending() if m["type"] == "access"] == [codes.ACC_OK_COMMAND]


def test_gateway_unlock_bad_comp_busy_and_other_commands():
    rt, a = _setup()
    e = _raises(CommandError, a.on_command, {"type": "unlock", "comp": 3, "req": 1, "reason": ""})
    assert e.code == messages.E_BAD_VALUE and e.field == "comp"
    a.on_command({"type": "unlock", "comp": 1, "req": 2, "reason": ""})
    e = _raises(CommandError, a.on_command, {"type": "unlock", "comp": 2, "req": 3, "reason": ""})
    assert e.code == messages.E_BUSY  # one coil at a time
    e = _raises(CommandError, a.on_command, {"type": "light_set", "level": 1, "hold": 1})
    assert e.code == messages.E_NOT_SUPPORTED
    _run(rt, a, 10000)
    a.on_command({"type": "unlock", "comp": 2, "req": 3, "reason": ""})  # the retry succeeds later


def test_busy_coil_does_not_burn_a_token():
    rt, a = _setup()
    a.on_command({"type": "unlock", "comp": 1, "req": 2, "reason": ""})
    t = token.issue(KEY, "k001", 2, NOW - 5, NOW + 3600, 99)
    _present(rt, 2, t)
    _run(rt, a, 10)
    assert 99 not in a.used
    _run(rt, a, 10000)
    _present(rt, 2, t)
    _run(rt, a, 10)
    assert 99 in a.used
    results = [m["result"] for m in rt.send_pending() if m["type"] == "access"]
    assert results == [codes.ACC_OK_COMMAND, codes.ACC_BUSY, codes.ACC_OK_TOKEN]


def test_door_tamper_and_open_too_long():
    rt, a = _setup({"comps": 2, "open_max_s": 30})
    rt.hal.pins["door1"].v = 1  # forced open
    _run(rt, a, 200)
    a.on_command({"type": "unlock", "comp": 2, "req": 5, "reason": ""})
    _run(rt, a, 1000)
    rt.hal.pins["door2"].v = 1
    _run(rt, a, 31000)
    got = []
    for _ in range(4):
        for m in rt.send_pending():
            got.append((m["type"], m.get("comp"), m.get("code", m.get("open")), m.get("authorized")))
            rt.ack(m)
        _run(rt, a, 20)
    assert got == [("door", 1, True, False), ("alarm", 1, 2, None), ("access", 2, None, None),
                   ("door", 2, True, True), ("alarm", 1, 3, None), ("alarm", 2, 3, None)]


def test_audit_survives_reboot_and_keeps_eid():
    rt, a = _setup()
    a.on_command({"type": "unlock", "comp": 1, "req": 9, "reason": ""})
    _run(rt, a, 20)
    sent = rt.send_pending()
    eid = sent[0]["eid"]
    _run(rt, a, 20)  # the app records the eid the link gave the event
    rt.session.events = []  # reboot: the runtime's RAM queue is gone, the audit is not
    b = app.App(rt)
    b.start(False)
    assert b.audit.pending() == [0]
    _run(rt, b, 20)
    again = rt.send_pending()
    assert len(again) == 1 and again[0]["eid"] == eid and again[0]["t"] == NOW
    rt.ack(again[0])
    _run(rt, b, 20)
    assert b.audit.pending() == [] and b.telemetry()["pending"] == 0


def _reboot(rt):
    rt.session.events = []
    b = app.App(rt)
    b.start(False)
    return b


def _drain(rt, a):
    got = []
    for _ in range(5):
        for m in rt.send_pending():
            got.append((m["type"], m.get("comp"), m.get("code", m.get("open")), m.get("authorized")))
            rt.ack(m)
        _run(rt, a, 20)
    return got


def test_reboot_resumes_doors_from_the_audit():
    rt, a = _setup()
    a.on_command({"type": "unlock", "comp": 1, "req": 1, "reason": ""})
    _run(rt, a, 500)
    rt.hal.pins["door1"].v = 1
    _run(rt, a, 500)
    assert _drain(rt, a) == [("access", 1, None, None), ("door", 1, True, True)]
    b = _reboot(rt)  # door 1 still open after an authorized opening: nothing new
    _run(rt, b, 200)
    assert _drain(rt, b) == []
    rt.hal.pins["door2"].v = 1  # forced while the board was down
    rt.hal.pins["door1"].v = 0  # closed while the board was down
    b = _reboot(rt)
    _run(rt, b, 200)
    assert sorted(_drain(rt, b)) == [("alarm", 2, 2, None), ("door", 1, False, True), ("door", 2, True, False)]
    _run(rt, b, 5000)
    b.on_command({"type": "unlock", "comp": 1, "req": 2, "reason": ""})  # unlocked, then reset before it opened
    _run(rt, b, 100)
    _drain(rt, b)
    rt.hal.pins["door1"].v = 1
    b = _reboot(rt)
    _run(rt, b, 200)
    assert _drain(rt, b) == [("door", 1, True, True)]


def test_audit_overflow_while_gateway_away_is_reported():
    rt, a = _setup()
    for i in range(a.audit.n + 3):
        rt.hal.pins["door1"].v = i % 2 == 0
        _run(rt, a, 100)
    assert a.audit.lost > 0
    faults = [m for m in rt.send_pending() if m["type"] == "fault"]
    assert faults and faults[-1]["code"] == codes.F_AUDIT_OVERFLOW and faults[-1]["value"] == a.audit.lost
    assert any(e[4] for e in rt.session.events if e[0]["type"] == "fault")  # durable


def test_safe_mode_never_unlocks_but_audits_doors():
    rt, a = _setup()
    b = app.App(rt)
    b.start(True)
    _present(rt, 1, token.issue(KEY, "k001", 1, NOW - 5, NOW + 3600, 1))
    rt.hal.pins["door2"].v = 1
    _run(rt, b, 500)
    assert rt.hal.pins["lock1"].high_ms == 0
    got = [(m["type"], m.get("result", m.get("code"))) for m in rt.send_pending()]
    assert ("access", codes.ACC_BUSY) in got and ("alarm", 2) in got


def test_short_booking_key_refuses_tokens():
    rt, a = _setup(key=KEY[:16])
    assert ("booking_key", False, app.KEY_PATH) in a.selftest()


def test_no_booking_key_refuses_tokens():
    rt, a = _setup(key=None)
    assert ("booking_key", False, app.KEY_PATH) in a.selftest()
    _present(rt, 1, token.issue(KEY, "k001", 1, NOW - 5, NOW + 3600, 1))
    _run(rt, a, 100)
    assert rt.hal.pins["lock1"].high_ms == 0


def test_config_pulse_cannot_exceed_hard_cap():
    e = _raises(config.ConfigError, config.validate, app.SCHEMA, {"pulse_ms": actuator.MAX_ON_MS + 1})
    assert e.field == "pulse_ms"
    rt, a = _setup()
    rt.cfg["pulse_ms"] = 60000  # even a config that slipped past validation
    a.on_command({"type": "unlock", "comp": 1, "req": 1, "reason": ""})
    _run(rt, a, 5000)
    assert rt.hal.pins["lock1"].high_ms <= actuator.MAX_ON_MS + 10


def test_telemetry_bitmaps():
    rt, a = _setup({"comps": 3, "occupancy": True})
    rt.hal.pins["door3"].v = 1
    rt.hal.pins["occ2"].v = 1
    _run(rt, a, 200)
    t = a.telemetry()
    messages.encode(t)
    assert t["open"] == 4 and t["occupied"] == 2 and t["locked"] == 3 and t["pending"] == 2


def test_occupancy_change_sent_as_telemetry_rate_limited():
    rt, a = _setup({"comps": 2, "occupancy": True})
    _run(rt, a, 200)
    assert rt.sent == []
    rt.hal.pins["occ1"].v = 1
    _run(rt, a, 200)
    assert [m["occupied"] for m in rt.sent] == [1]
    rt.hal.pins["occ2"].v = 1
    _run(rt, a, 200)
    assert len(rt.sent) == 1  # not more often than TELEMETRY_GAP_MS
    _run(rt, a, app.TELEMETRY_GAP_MS)
    assert [m["occupied"] for m in rt.sent] == [1, 3]


def test_config_change_applies():
    rt, a = _setup()
    new = config.validate(app.SCHEMA, {"comps": 3}, base=rt.cfg)
    a.on_config(new)
    rt.cfg = new
    assert len(a.comps) == 3
    new2 = config.validate(app.SCHEMA, {"open_max_s": 20}, base=new)
    a.on_config(new2)
    assert a.comps[0].limit_ms == 20000


def _raises(exc, fn, *a):
    try:
        fn(*a)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


def test_door_open_at_first_boot_is_reported_without_a_tamper_alarm():
    """issue 9 item 11: a door that was already open when the board first watched it is a door
    event, not a forced door; once watched, a door forced while the board was down still is."""
    _n[0] += 1
    d = "%s/b%d" % (_BASE, _n[0])
    os.mkdir(d)
    app.STATE = d + "/state"
    hal = Hal()
    hal.pins["door1"] = Pin(1)
    rt = FakeRt(hal=hal)
    a = app.App(rt)
    a.start(False)
    _run(rt, a, 200)
    assert _drain(rt, a) == [("door", 1, True, False)]
    hal.pins["door1"].v = 0
    _run(rt, a, 200)
    _drain(rt, a)
    hal.pins["door1"].v = 1  # now forced while the board is down
    b = _reboot(rt)
    _run(rt, b, 200)
    assert sorted(_drain(rt, b)) == [("alarm", 1, 2, None), ("door", 1, True, False)]


def test_compartment_added_by_config_with_its_door_open_raises_no_tamper():
    rt, a = _setup()
    rt.hal.pins["door3"] = Pin(1)
    a.on_config(config.validate(app.SCHEMA, {"comps": 3}, base=rt.cfg))
    _run(rt, a, 200)
    assert _drain(rt, a) == [("door", 3, True, False)]


def test_stop_leaves_no_coil_energised():
    """Before an update's install sets the App aside (common.ota_inst), stop() ends a pulse that
    is under way: a coil held on would burn out, and no loop is left to end it."""
    rt, a = _setup()
    a.on_command({"type": "unlock", "comp": 2, "req": 78, "reason": "support"})
    a.step(rt.ms)
    assert rt.hal.pins["lock2"].value() == 1 and a.comps[1].lock.energised
    a.stop()
    assert [rt.hal.pins[n].value() for n in ("lock1", "lock2")] == [0, 0]
    assert not any(c.lock.energised for c in a.comps)
