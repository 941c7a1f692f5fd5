"""Locker logic units with fake pins; runs under CPython (pytest) AND inside the real
MicroPython VM (test_locker_mp.py runs this very module there with mpvm).

Portable on purpose: no pytest, no f-strings with format specs, no CPython-only modules.
"""

import sys

if sys.implementation.name == "cpython":
    import tempfile

    _BASE = tempfile.mkdtemp(prefix="locker-units-")
else:
    _BASE = "/tmp_locker"

from locker import access, audit, flash, reader
from locker import compartment as actuator  # LockActuator lives with the compartment
from locker.access import Lockout
from locker.compartment import Compartment, Debounced
from common.ticks import ticks_add
from locker.usedids import RecentReqs, UsedIds
from protocol import codes, token
from protocol.cose import Mac

KEY = bytes(range(32))
NOW = 1_790_000_000
_n = [0]


def _dir():
    _n[0] += 1
    return "%s/t%d" % (_BASE, _n[0])


class Pin:
    def __init__(self, v=0):
        self.v = v
        self.writes = []

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = 1 if v else 0
        self.writes.append(self.v)


def raises(exc, fn, *a):
    try:
        fn(*a)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


# actuator -----------------------------------------------------------------------------

def test_actuator_pin_driven_off_at_construction():
    p = Pin(1)
    actuator.LockActuator(p)
    assert p.v == 0 and p.writes == [0]


def test_actuator_pulse_is_clamped_whatever_is_asked():
    p = Pin()
    a = actuator.LockActuator(p)
    assert a.pulse(10 ** 9, 0)
    assert p.v == 1
    assert a.service(actuator.MAX_ON_MS - 1) == 1
    assert p.v == 1
    a.service(actuator.MAX_ON_MS)
    assert p.v == 0 and not a.energised


def test_actuator_never_extended_and_rests():
    p = Pin()
    a = actuator.LockActuator(p)
    assert a.pulse(200, 1000)
    assert not a.pulse(200, 1100)  # a second command cannot extend the pulse
    a.service(1200)
    assert p.v == 0
    rest_end = 1000 + 200 * (1 + actuator.REST_FACTOR)
    assert not a.pulse(200, rest_end - 1)
    a.service(rest_end)
    assert a.pulse(200, rest_end)
    assert a.pulses == 2


def test_actuator_tiny_pulse_gets_minimum_and_timer_backstop():
    p = Pin()
    armed = []
    a = actuator.LockActuator(p, arm=lambda ms, off: armed.append((ms, off)))
    a.pulse(0, 0)
    assert armed[0][0] == actuator.MIN_ON_MS
    armed[0][1](None)  # the hardware timer fires although the loop never ran
    assert p.v == 0 and not a.energised


def test_actuator_pulse_across_tick_wrap():
    p = Pin()
    a = actuator.LockActuator(p)
    t0 = (1 << 30) - 100
    assert a.pulse(300, t0)
    a.service(ticks_add(t0, 299))
    assert p.v == 1
    a.service(ticks_add(t0, 300))  # 200 after the wrap
    assert p.v == 0


def test_actuator_rest_survives_tick_wrap_horizon():
    a = actuator.LockActuator(Pin())
    a.pulse(100, 0)
    a.service(100)
    a.service(100 + 100 * (1 + actuator.REST_FACTOR))
    # long after: tick differences may wrap, the flag says it rested
    assert a.ready(-(1 << 29))


# debounce -----------------------------------------------------------------------------

def test_debounce_ignores_bounces_and_reports_once():
    p = Pin(0)
    d = Debounced(p, 50, False, 0)
    assert d.state is False
    p.v = 1
    assert not d.poll(10)
    p.v = 0
    assert not d.poll(20)
    p.v = 1
    assert not d.poll(30)
    assert not d.poll(79)
    assert d.poll(80)
    assert d.state is True
    assert not d.poll(200)


def test_debounce_invert():
    p = Pin(1)
    d = Debounced(p, 10, True, 0)
    assert d.state is False


# lockout ------------------------------------------------------------------------------

def test_lockout_after_max_failures_and_escalation():
    lo = Lockout(3, 60000, 1000)
    assert lo.fail(0) == 0 and lo.fail(1) == 0
    assert lo.fail(2) == 1000
    assert lo.locked(500) and lo.remaining_ms(500) == 502
    assert not lo.locked(1002)
    lo.fail(2000)
    lo.fail(2001)
    assert lo.fail(2002) == 2000  # doubled
    lo.success()
    lo.fail(10000)
    lo.fail(10001)
    assert lo.fail(10002) == 1000


def test_lockout_window_forgets_old_failures():
    lo = Lockout(3, 1000, 5000)
    lo.fail(0)
    lo.fail(10)
    assert lo.fail(2000) == 0
    assert lo.fails == 1


# flash / used ids / recent reqs -------------------------------------------------------

def test_flash_roundtrip_and_corruption_detected():
    path = _dir() + "/f.bin"
    flash.ensure_dir(path)
    assert flash.load(path) is None
    flash.save(path, b"hello")
    assert flash.load(path) == b"hello"
    with open(path, "r+b") as f:
        f.seek(1)
        f.write(b"X")
    raises(flash.CorruptError, flash.load, path)


def test_used_ids_persist_prune_and_fail_closed():
    path = _dir() + "/used.bin"
    u = UsedIds(path, 3)
    assert u.add(1, NOW + 10, NOW) and u.add(2, NOW + 20, NOW) and u.add(3, NOW + 30, NOW)
    assert not u.add(4, NOW + 40, NOW)  # full of live ids: refuse
    u2 = UsedIds(path, 3)  # after a reboot
    assert 1 in u2 and 2 in u2 and 3 in u2 and 4 not in u2
    assert u2.add(4, NOW + 40, NOW + 11)  # token 1 expired: pruned
    assert 1 not in u2 and 4 in u2
    assert len(UsedIds(path, 3)) == 3


def test_used_ids_corrupt_file_flagged():
    path = _dir() + "/used.bin"
    UsedIds(path, 3).add(1, NOW, NOW)
    with open(path, "r+b") as f:
        f.write(b"\x00\x00\x00\x09")
    u = UsedIds(path, 3)
    assert u.corrupt and len(u) == 0


def test_recent_reqs_ring_persists():
    path = _dir() + "/req.bin"
    r = RecentReqs(path, 3)
    for q in (10, 11, 12, 13):
        r.add(q)
    r2 = RecentReqs(path, 3)
    assert 10 not in r2 and 11 in r2 and 12 in r2 and 13 in r2
    r2.add(14)
    r3 = RecentReqs(path, 3)
    assert 11 not in r3 and 14 in r3 and 13 in r3


# reader -------------------------------------------------------------------------------

def test_reader_lines():
    raw = token.issue(KEY, "k001", 3, NOW, NOW + 60, 7)
    p = reader.ReaderParser()
    line = reader.encode_line(3, raw)
    assert p.feed(line[:5]) == []
    assert p.feed(line[5:]) == [(3, raw)]
    assert p.feed(b"3 " + b"\r\n") == [(0, None)]
    assert p.feed(b"x3 AAAA\n") == [(0, None)]
    assert p.feed(b"4 !!!!\n")[0][1] is None
    assert p.feed(b"2 !!not base64!!\n") == [(2, None)]
    assert p.feed(b"2 QUJD\n5 QUJDRA\n") == [(2, b"ABC"), (5, None)]
    assert p.feed(b"\n") == []


def test_reader_overlong_line_dropped_once():
    p = reader.ReaderParser()
    out = p.feed(b"1 " + b"A" * 300)
    assert out == [(0, None)]
    assert p.feed(b"AAAA\n") == []
    raw = token.issue(KEY, "k001", 1, NOW, NOW + 60, 8)
    assert p.feed(reader.encode_line(1, raw)) == [(1, raw)]


# access -------------------------------------------------------------------------------

def _access(n=4, cap=8, max_fail=3):
    return access.Access(Mac(KEY), "k001", n, UsedIds(_dir() + "/used.bin", cap), Lockout(max_fail, 60000, 5000))


def test_access_each_refusal_code():
    a = _access(max_fail=100)
    good = token.issue(KEY, "k001", 2, NOW - 10, NOW + 60, 42)
    assert a.decide(good, 2, NOW, 0) == (codes.ACC_OK_TOKEN, 42, 0)
    assert a.decide(good, 2, NOW, 1) == (codes.ACC_REPLAYED, 42, 0)
    assert a.decide(token.issue(b"k" * 32, "k001", 2, NOW, NOW + 9, 5), 2, NOW, 2) == (codes.ACC_FORGED, 0, 0)
    assert a.decide(token.issue(KEY, "k002", 2, NOW, NOW + 9, 6), 2, NOW, 3)[:2] == (codes.ACC_WRONG_LOCKER, 6)
    assert a.decide(token.issue(KEY, "k001", 1, NOW, NOW + 9, 7), 2, NOW, 4)[:2] == (codes.ACC_WRONG_COMPARTMENT, 7)
    assert a.decide(token.issue(KEY, "k001", 2, NOW + 5, NOW + 9, 8), 2, NOW, 5)[:2] == (codes.ACC_NOT_YET_VALID, 8)
    assert a.decide(token.issue(KEY, "k001", 2, NOW - 9, NOW - 1, 9), 2, NOW, 6)[:2] == (codes.ACC_EXPIRED, 9)
    assert a.decide(b"\x82\x01", 2, NOW, 7)[0] == codes.ACC_MALFORMED
    assert a.decide(None, 0, NOW, 8)[0] == codes.ACC_MALFORMED
    assert a.decide(token.issue(KEY, "k001", 9, NOW, NOW + 9, 10), 9, NOW, 9)[:2] == (codes.ACC_WRONG_COMPARTMENT, 10)


def test_access_without_time_or_key_is_refused_but_not_a_failure():
    a = _access()
    good = token.issue(KEY, "k001", 1, NOW, NOW + 60, 1)
    assert a.decide(good, 1, None, 0)[0] == codes.ACC_NO_TIME
    a.mac = None
    assert a.decide(good, 1, NOW, 0)[0] == codes.ACC_BUSY
    assert a.lockout.fails == 0


def test_access_lockout_refuses_even_valid_token_then_recovers():
    a = _access(max_fail=3)
    bad = token.issue(b"k" * 32, "k001", 1, NOW, NOW + 9, 5)
    assert a.decide(bad, 1, NOW, 0)[2] == 0
    assert a.decide(bad, 1, NOW, 1)[2] == 0
    assert a.decide(bad, 1, NOW, 2)[2] == 5000
    good = token.issue(KEY, "k001", 1, NOW, NOW + 600, 77)
    assert a.decide(good, 1, NOW, 100) == (codes.ACC_LOCKED_OUT, 0, 0)
    assert 77 not in a.used  # a refused presentation does not burn the token
    assert a.decide(good, 1, NOW, 5002) == (codes.ACC_OK_TOKEN, 77, 0)


def test_access_used_store_full_fails_closed():
    a = _access(cap=1)
    assert a.decide(token.issue(KEY, "k001", 1, NOW, NOW + 600, 1), 1, NOW, 0)[0] == codes.ACC_OK_TOKEN
    assert a.decide(token.issue(KEY, "k001", 1, NOW, NOW + 600, 2), 1, NOW, 1)[0] == codes.ACC_BUSY


# audit --------------------------------------------------------------------------------

def test_audit_append_ack_and_reboot():
    path = _dir() + "/audit.bin"
    log = audit.AuditLog(path, 8)
    r0 = log.append(NOW, audit.ACCESS, 2, 0, 42)
    log.append(NOW, audit.DOOR, 2, 3)
    log.append(0, audit.ALARM, 1, 2, -5)
    assert log.pending() == [0, 1, 2]
    assert r0.msg() == {"type": "access", "comp": 2, "result": 0, "token": 42, "t": NOW}
    assert log.ack(1) and not log.ack(1)
    log2 = audit.AuditLog(path, 8)  # reboot
    assert log2.pending() == [0, 2] and log2.next_seq == 3
    assert log2.read(1).flags & audit.F_ACKED
    assert log2.read(2).msg() == {"type": "alarm", "code": 2, "comp": 1, "value": -5, "t": 0}
    log2.set_eid(2, 1 << 39)
    assert audit.AuditLog(path, 8).read(2).msg()["eid"] == 1 << 39
    assert log2.read(1).msg() == {"type": "door", "comp": 2, "open": True, "authorized": True, "t": NOW}


def test_audit_ring_bounded_counts_lost():
    path = _dir() + "/audit.bin"
    log = audit.AuditLog(path, 4)
    for i in range(6):
        log.append(NOW + i, audit.FAULT, 0, 6, i)
    assert log.lost == 2 and log.pending() == [2, 3, 4, 5]
    assert log.read(0) is None and log.read(5).v == 5
    log.ack(2)
    log.append(NOW, audit.FAULT, 0, 6, 9)  # overwrites acked seq 2: nothing lost
    assert log.lost == 2
    with open(path, "rb") as f:
        assert len(f.read()) == 4 * audit.REC
    assert [r.seq for r in audit.AuditLog(path, 4).records()] == [3, 4, 5, 6]


def test_audit_torn_record_skipped():
    path = _dir() + "/audit.bin"
    log = audit.AuditLog(path, 4)
    log.append(NOW, audit.DOOR, 1, 1)
    log.append(NOW, audit.DOOR, 1, 0)
    with open(path, "r+b") as f:
        f.seek(audit.REC + 5)
        f.write(b"\x00")
    log2 = audit.AuditLog(path, 4)
    assert log2.pending() == [0] and log2.bad == 1


# compartment --------------------------------------------------------------------------

def _comp():
    ev = []
    lock, door = Pin(), Pin()
    c = Compartment(1, actuator.LockActuator(lock), Debounced(door, 20, False, 0), None,
                    lambda *e: ev.append(e), 5000, 60000)
    return c, lock, door, ev


def test_compartment_authorized_open_then_close():
    c, lock, door, ev = _comp()
    assert c.locked()
    assert c.unlock(500, 0) and lock.v == 1
    c.step(500)
    assert lock.v == 0
    door.v = 1
    c.step(1000)
    c.step(1030)
    assert ev == [(audit.DOOR, 1, 3, 0)] and c.is_open
    door.v = 0
    c.step(2000)
    c.step(2030)
    assert ev[1] == (audit.DOOR, 1, 2, 0) and c.locked()


def test_compartment_tamper_without_unlock_and_after_window():
    c, lock, door, ev = _comp()
    door.v = 1
    c.step(0)
    c.step(30)
    assert ev == [(audit.DOOR, 1, 1, 0), (audit.ALARM, 1, codes.A_TAMPER, 0)]
    door.v = 0
    c.step(100)
    c.step(130)
    del ev[:]
    c.unlock(100, 1000)
    c.step(1100)
    door.v = 1
    c.step(7000)  # window of 5 s has passed
    c.step(7030)
    assert (audit.ALARM, 1, codes.A_TAMPER, 0) in ev


def test_compartment_open_too_long_once():
    c, lock, door, ev = _comp()
    c.unlock(100, 0)
    door.v = 1
    c.step(10)
    c.step(40)
    w = c.step(1000)
    assert 0 < w <= 60000 - 960
    c.step(61040)
    c.step(70000)
    alarms = [e for e in ev if e[0] == audit.ALARM]
    assert alarms == [(audit.ALARM, 1, codes.A_DOOR_OPEN_TOO_LONG, 61)]
