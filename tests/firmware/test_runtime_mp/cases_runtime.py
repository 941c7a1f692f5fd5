# Runtime behaviour, run inside genuine MicroPython by tests/firmware/test_runtime_mp.py.
import machine
from protocol import cbor, messages

from common import clock, config
from common.errors import CommandError
from common.config import INT, BOOL

import harness
from harness import Board, types, wipe, provision


class LampApp:
    ROLE = "light_pole"
    CAPS = 3
    FW = 10203
    SCHEMA = {"base": (INT, 20, 0, 100), "full": (INT, 100, 0, 100), "motion": (BOOL, True, None, None)}
    fail = False

    def __init__(self, rt):
        self.rt = rt
        self.steps = 0
        self.applied = []

    def start(self, safe):
        self.safe = safe
        if LampApp.fail and not safe:
            raise RuntimeError("start crash")

    def step(self, now):
        self.steps += 1
        if LampApp.fail:
            raise RuntimeError("step crash")
        return 100

    def on_command(self, msg):
        if msg["type"] == "light_set" and msg["level"] > self.rt.cfg["full"]:
            raise CommandError(messages.E_BAD_VALUE, "level")

    def on_config(self, values):
        if values["base"] > values["full"]:
            raise config.ConfigError("base", "above full")
        self.applied.append(values)

    def telemetry(self):
        return {"type": "light", "level": 20, "state": 1, "ambient": 0, "lamp_ma": 0}

    def selftest(self):
        return [("lamp", True, "")]


def setup():
    wipe()
    LampApp.fail = False
    provision()


def test_hello_then_welcome_sets_time_and_heartbeat():
    setup()
    b = Board(LampApp)
    b.run(100)
    out = b.recv()
    hello = [m for s, m in out if m["type"] == "hello"][0]
    assert hello["role"] == 2 and hello["fw"] == 10203 and hello["caps"] == 3 and len(hello["nonce"]) == 8
    assert clock.now() is None
    b.uart.tx.extend(b"")
    b.down({"type": "welcome", "echo": hello["nonce"], "time": harness.T0, "hb": 600})
    b.run(40)
    got = b.recv()
    assert b.rt.link_up
    assert abs(clock.now() - harness.T0) <= 1
    hb = [m for s, m in got if m["type"] == "heartbeat"][0]
    assert hb["fw"] == 10203 and hb["boots"] == 1 and hb["status"] & messages.ST_TIME_VALID
    assert hb["status"] & 7 == 1  # power on
    assert "light" in types(got)


def test_hello_retried_with_backoff_until_welcome():
    setup()
    b = Board(LampApp)
    b.run(10000)
    n = [m for s, m in b.recv() if m["type"] == "hello"]
    # 0, 1, 3, 7 s: four hellos in ten seconds, same nonce
    assert len(n) == 4, len(n)
    assert n[0]["nonce"] == n[3]["nonce"]


def test_downlink_ignored_before_welcome():
    setup()
    b = Board(LampApp)
    b.run(50)
    b.recv()
    b.down({"type": "light_set", "level": 50, "hold": 10})
    b.run(50)
    assert b.recv() == []
    assert b.rt.session.ignored == 1


def test_welcome_with_wrong_echo_ignored():
    setup()
    b = Board(LampApp)
    b.run(50)
    b.recv()
    b.down({"type": "welcome", "echo": b"12345678", "time": harness.T0, "hb": 600})
    b.run(50)
    assert not b.rt.link_up


def test_resync_jumps_counter_and_sends_fresh_hello():
    setup()
    b = Board(LampApp)
    b.run(50)
    hello_seq, hello = [(s, m) for s, m in b.recv() if m["type"] == "hello"][0]
    b.down({"type": "resync", "echo": hello["nonce"], "floor": 5000})
    b.run(50)
    out = [(s, m) for s, m in b.recv() if m["type"] == "hello"]
    assert out and out[0][0] >= 5000
    assert out[0][1]["nonce"] != hello["nonce"]
    b.down({"type": "welcome", "echo": out[0][1]["nonce"], "time": harness.T0, "hb": 600})
    b.run(50)
    assert b.rt.link_up


def test_config_nack_names_field_and_keeps_old_config():
    setup()
    b = Board(LampApp)
    b.run(50)
    b.welcome()
    b.down({"type": "config", "values": {"base": 150}})
    b.down({"type": "config", "values": {"base": 90, "full": 50}})
    b.down({"type": "config", "values": {"colour": 3}})
    b.down({"type": "config", "values": {"motion": 1}})
    b.run(50)
    nacks = [m for s, m in b.recv() if m["type"] == "nack"]
    assert [(m["code"], m["field"]) for m in nacks] == [
        (messages.E_BAD_VALUE, "base"), (messages.E_BAD_VALUE, "base"),
        (messages.E_BAD_VALUE, "colour"), (messages.E_BAD_VALUE, "motion")]
    assert b.rt.cfg == {"base": 20, "full": 100, "motion": True}
    assert config.read_json("/config.json")["app"] == {}
    b.down({"type": "config", "values": {"base": 30}})
    b.run(50)
    acks = [m for s, m in b.recv() if m["type"] == "ack"]
    assert len(acks) == 1
    assert b.rt.cfg["base"] == 30 and b.rt.app.applied[-1]["base"] == 30
    assert config.read_json("/config.json")["app"]["base"] == 30
    b.reboot()
    assert b.rt.cfg["base"] == 30


def test_app_command_nack_and_ack():
    setup()
    provision(app={"full": 80})
    b = Board(LampApp)
    b.run(50)
    b.welcome()
    b.down({"type": "light_set", "level": 90, "hold": 5})
    b.down({"type": "light_set", "level": 50, "hold": 5})
    b.raw(b.gw.raw_payload(cbor.dumps([144, 101, 5])))  # authentic light_set, level out of range
    b.run(50)
    got = b.recv()
    assert [(m["type"], m.get("code"), m.get("field")) for s, m in got] == [
        ("nack", messages.E_BAD_VALUE, "level"), ("ack", None, None), ("nack", messages.E_MALFORMED, "level")]
    assert [m["ref"] for s, m in got] == [b.gw.seq - 2, b.gw.seq - 1, b.gw.seq]


def test_bad_frames_dropped_and_counted_never_answered():
    setup()
    b = Board(LampApp)
    b.run(50)
    b.welcome()
    seq = b.gw.seq
    b.raw(b"\x01\x02garbage\x00")                         # framing
    b.down({"type": "time", "time": harness.T0}, mac=__import__("protocol.cose").cose.Mac(bytes(32)))  # forged
    b.down({"type": "time", "time": harness.T0}, seq=seq)  # replay of the welcome's seq
    b.down({"type": "time", "time": harness.T0}, kid=b"x999")  # unknown kid
    b.run(50)
    assert b.recv() == []
    assert b.rt.session.dropped == 4
    b.run(600 * 1000)
    hb = [m for s, m in b.recv() if m["type"] == "heartbeat"][-1]
    assert hb["dropped"] == 4


def test_event_retransmitted_with_same_eid_until_ack():
    setup()
    b = Board(LampApp)
    b.run(50)
    b.welcome()
    b.rt.event({"type": "motion", "count": 2})
    b.run(7000)
    ev = [(s, m) for s, m in b.recv() if m["type"] == "motion"]
    assert len(ev) == 3, ev  # at 0, 2, 6 s
    eids = [m["eid"] for s, m in ev]
    assert eids == [ev[0][0]] * 3
    assert len(set(s for s, m in ev)) == 3
    b.down({"type": "ack", "ref": ev[1][0]})
    b.run(60000)
    assert [m for s, m in b.recv() if m["type"] == "motion"] == []
    assert b.rt.pending_events() == 0


def test_time_command_sets_rtc_and_refuses_invalid():
    setup()
    b = Board(LampApp)
    b.run(50)
    b.welcome(time=harness.T0)
    b.down({"type": "time", "time": harness.T0 + 3600})
    b.down({"type": "time", "time": 5})
    b.run(50)
    got = [m for s, m in b.recv()]
    assert got[0]["type"] == "ack"
    assert got[1]["type"] == "nack" and got[1]["field"] == "time"
    assert abs(clock.now() - harness.T0 - 3600) <= 1


def test_watchdog_fed_only_while_app_healthy():
    setup()
    b = Board(LampApp)
    b.run(1000)
    w = machine.wdt[-1]
    assert w.timeout == 4000 and w.feeds > 0
    LampApp.fail = True
    fed = w.feeds
    b.run(5000)
    # two failing steps still feed (transient), the third stops feeding for good
    assert w.feeds <= fed + 2 * 50
    stop = w.feeds
    b.run(5000)
    assert w.feeds == stop
    assert not b.rt.healthy


def test_safe_mode_after_fast_reboots_and_reported():
    setup()
    LampApp.fail = True
    for i in range(3):
        try:
            Board(LampApp)
            assert False, "start should crash"
        except RuntimeError:
            pass
        machine.cause = machine.WDT_RESET
    b = Board(LampApp)
    assert b.rt.safe and b.rt.app.safe
    b.run(50)
    got = b.welcome()
    b.run(100)
    got += b.recv()
    fault = [m for s, m in got if m["type"] == "fault"]
    assert fault and fault[0]["code"] == 7 and fault[0]["value"] == 4
    hb = [m for s, m in got if m["type"] == "heartbeat"][0]
    assert hb["status"] & messages.ST_SAFE_MODE and hb["status"] & 7 == 3
    # app commands are refused in safe mode; the link still answers
    b.down({"type": "light_set", "level": 10, "hold": 5})
    b.run(50)
    assert [(m["type"], m["code"]) for s, m in b.recv() if m["type"] == "nack"] == [("nack", messages.E_NOT_READY)]


def test_stable_run_clears_fast_boot_count():
    setup()
    b = Board(LampApp)
    assert b.rt.boot.fast == 1
    b.run(31000)
    assert b.rt.boot.fast == 0
    for i in range(5):
        b.reboot()
        b.run(31000)
    assert not b.rt.safe and b.rt.boot.boots == 6


def test_store_values_and_log_survive_and_skip_torn_lines():
    setup()
    from common.store import Store
    st = Store()
    assert st.get("x", 7) == 7
    st.put("x", {"a": [1, 2]})
    assert Store().get("x") == {"a": [1, 2]}
    st.delete("x")
    assert st.get("x") is None
    log = st.log("audit", limit=3)
    for i in range(4):
        ok = log.append({"n": i})
    assert not ok and log.lost == 1 and len(log) == 3
    assert log.peek(5) == [{"n": 1}, {"n": 2}, {"n": 3}]
    with open("/state/audit.log", "a") as f:
        f.write('{"n": 9')                      # a brown-out in the middle of a write
    log2 = st.log("audit", limit=3)
    assert len(log2) == 3 and log2.peek(5) == [{"n": 1}, {"n": 2}, {"n": 3}]
    log2.drop(2)
    assert log2.peek(5) == [{"n": 3}] and len(log2) == 1
    log2.append({"n": 4})
    assert st.log("audit").peek(5) == [{"n": 3}, {"n": 4}]


def test_config_schema_validation_errors_name_the_field():
    from common.config import ConfigError, validate, check_schema, CHOICE, STR
    schema = dict(LampApp.SCHEMA)
    schema["mode"] = (CHOICE, "a", ("a", "b"), None)
    schema["name"] = (STR, "x", 1, 4)
    check_schema(schema)
    assert validate(schema, {"mode": "b"})["mode"] == "b"
    for values, field in (({"mode": "c"}, "mode"), ({"name": ""}, "name"), ({"name": "toolong"}, "name"),
                          ({"base": True}, "base"), ({"motion": 0}, "motion"), ({"zz": 1, "base": -1}, "base")):
        try:
            validate(schema, values)
            assert False, values
        except ConfigError as e:
            assert e.field == field, (values, e.field)
    try:
        check_schema({"x": (STR, "toolong", 0, 3)})
        assert False
    except ConfigError as e:
        assert e.field == "app.x"


def test_provisioning_errors_are_clear():
    from common import config
    from common.errors import ProvisionError
    wipe()
    try:
        config.load("/config.json")
        assert False
    except ProvisionError as e:
        assert "/config.json is missing" in str(e)
    c = provision()
    c["pins"] = {"a": 5, "b": {"pin": 5}}
    config.write_json("/config.json", c)
    try:
        config.load("/config.json")
        assert False
    except config.ConfigError as e:
        assert e.field == "pins.b.pin" and "already used by a" in e.reason
    c["pins"] = {}
    c["link"] = {"baud": 7}
    config.write_json("/config.json", c)
    try:
        config.load("/config.json")
        assert False
    except config.ConfigError as e:
        assert e.field == "link.baud"


def test_selftest_for_technicians_counts_no_boot_and_sends_nothing():
    setup()
    b = Board(LampApp)
    boots = b.rt.boot.boots
    sent = len(b.uart.tx)
    from common import runtime
    import os
    try:
        os.mkdir("/lib/light_pole")
    except OSError:
        pass
    for name, src in (("__init__.py", ""), ("app.py", "from cases_runtime import LampApp as App\n")):
        with open("/lib/light_pole/" + name, "w") as f:
            f.write(src)
    with open("/key.bin", "wb") as f:
        f.write(harness.KEY)
    rows = runtime.selftest()
    assert rows == [("lamp", True, "")]
    from common.store import Store
    assert Store().get("boot")["n"] == boots
    assert len(b.uart.tx) == sent


def test_a_chip_drives_its_loop_without_asyncio():
    """common.clock on a chip (this VM takes the WebAssembly port's asyncio branch, so the chip's
    functions are called by name): run sleeps the ms each `await sleep_ms` yields, in order, and
    returns when the loop ends."""
    import time
    seen = []

    async def loop():
        for ms in (0, 40, 0):
            seen.append(ms)
            await clock._sleep(ms)
        return "ended"

    t0 = time.ticks_ms()
    assert clock._drive(loop()) is None
    assert seen == [0, 40, 0] and time.ticks_diff(time.ticks_ms(), t0) >= 40
