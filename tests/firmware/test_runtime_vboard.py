"""The runtime on a virtual board: boot counter and safe mode, watchdog, session
(hello/welcome/resync, acks, retransmits, nacks, dropped frames), RTC time, heartbeat
diagnostics, config and reboot commands. The runtime is the unmodified firmware/common;
the role App is a test double (test_runtime_vboard/probe_app.py) driven through GPIOs."""
from __future__ import annotations

import contextlib
import json
import shutil

import pytest

from sim.testbed import T_2026, Peer, deploy_tree, vboard_available
from protocol import cbor, codec, codes, cose, framing, messages, names

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not vboard_available(), reason="virtual boards not installed: run ./dev setup"),
]

KID = b"l901"
CRASH, EVT, BOOTCRASH, LAMP, HANG, HOG = 12, 13, 14, 2, 26, 27
PINS = {"crash": CRASH, "evt": EVT, "bootcrash": BOOTCRASH, "lamp": LAMP, "hang": HANG, "hog": HOG}
PROBE = __import__("pathlib").Path(__file__).resolve().parent / "test_runtime_vboard" / "probe_app.py"


@contextlib.contextmanager
def board(tmp_path, rt=None, app=None, hang_timeout=10.0, role="light_pole", app_source=None, console_port=None,
          link=None, **peer):
    """The probe App deployed as light_pole; role: what /config.json says; app_source replaces the App."""
    from sim import vboard
    img = deploy_tree(tmp_path / "img", "container_sensor", KID.decode(), PINS, app,
                      dict({"wdt_ms": 3000, "safe_boots": 3, "stable_s": 20}, **(rt or {})), link)
    shutil.rmtree(img / "lib" / "container_sensor")
    (img / "lib" / "light_pole").mkdir()
    (img / "lib" / "light_pole" / "__init__.py").write_text("")
    if app_source is None:
        shutil.copyfile(PROBE, img / "lib" / "light_pole" / "app.py")
    else:
        (img / "lib" / "light_pole" / "app.py").write_text(app_source)
    cfg = json.loads((img / "config.json").read_text())
    cfg["role"] = role
    (img / "config.json").write_text(json.dumps(cfg))
    with vboard.VirtualBoard(deploy_dir=img, flash_dir=tmp_path / "flash", name="probe",
                             hang_timeout=hang_timeout, console_port=console_port) as b:
        p = Peer(b, KID, **peer)
        try:
            yield b, p
        finally:
            p.close()


def resets(b):
    return [e["cause"] for e in b.events("reset")]


def test_hello_welcome_time_and_heartbeat_diagnostics(tmp_path):
    with board(tmp_path, hb=60) as (b, p):
        assert b.unix_time > T_2026 + 86400                      # the bench clock: today
        p.connect()
        hello = p.of("hello")[0]
        assert (hello["role"], hello["fw"], hello["caps"]) == (2, 990102, 16)
        assert abs(b.unix_time - T_2026) < 5                  # the RTC took the welcome's time
        hb = p.of("heartbeat")[0]
        assert hb["fw"] == 990102 and hb["boots"] == 1 and hb["batt"] is None and hb["dropped"] == 0
        assert hb["status"] == 1 | messages.ST_TIME_VALID        # power-on, time valid, not safe
        assert hb["heap"] > 0
        assert p.of("light")[0]["level"] == 20                   # telemetry follows the heartbeat
        p.run(60_000, step=1000)
        assert len(p.of("heartbeat")) == 2                       # every hb seconds
        assert p.of("heartbeat")[1]["uptime"] == 0               # whole hours since boot (SPEC 5)


def test_heartbeat_uptime_in_hours_heap_in_kib(tmp_path):
    """issue 9 item 9: the heartbeat's units keep it within a LoRaWAN DR0 payload for a lifetime."""
    # one wake-up a second (not the 20 ms link poll): two virtual hours in seconds of CPU
    with board(tmp_path, app={"step_ms": 1000}, link={"poll_ms": 1000}, hb=600) as (b, p):
        p.connect()
        p.run(2 * 3600_000 + 1000, step=60_000)
        hb = p.of("heartbeat")[-1]
        assert hb["uptime"] == 2 and 0 < hb["heap"] <= 255 and hb["boots"] == 1


def test_downlink_ignored_until_welcome_then_resync(tmp_path):
    with board(tmp_path, welcome=False) as (b, p):
        p.run(1500)
        h1_seq, h1 = [(s, m) for s, m in p.up if m["type"] == "hello"][0]
        ref = p.send({"type": "light_set", "level": 10, "hold": 0})
        p.run(300)
        assert ref not in p.replies                               # no session yet: ignored
        p.send({"type": "resync", "echo": b"wrongnon", "floor": 99})
        p.send({"type": "resync", "echo": h1["nonce"], "floor": 5000})
        p.run(300)
        h2_seq, h2 = [(s, m) for s, m in p.up if m["type"] == "hello"][-1]
        assert h2_seq >= 5000 and h2["nonce"] != h1["nonce"]
        p.welcome = True
        p.send({"type": "welcome", "echo": h2["nonce"], "time": T_2026, "hb": 0})
        p.run(300)
        assert p.command({"type": "light_set", "level": 10, "hold": 0})["type"] == "ack"


def test_bad_frames_dropped_counted_and_bad_payload_nacked(tmp_path):
    with board(tmp_path, hb=30) as (b, p):
        p.connect()
        welcome_seq = p.seq - 1
        p.raw(b"\x05garbage-without-a-valid-crc\x00")
        p.raw(codec.pack(cose.Mac(bytes(32)), cose.DOWN, KID, p.seq + 5, {"type": "time", "time": T_2026}))
        p.raw(codec.pack(p.mac, cose.DOWN, KID, welcome_seq, {"type": "time", "time": T_2026}))  # replay
        p.raw(codec.pack(p.mac, cose.DOWN, b"l999", p.seq + 6, {"type": "time", "time": T_2026}))
        p.raw(b"\x01" * 600 + b"\x00")                            # oversize
        p.run(500)
        assert p.replies == {}
        # authentic but out of range: nacked with the field, never a crash
        s = p.seq
        p.raw(framing.encode_frame(cose.seal(p.mac, cose.DOWN, KID, s, cbor.dumps([144, 101, 0]))))
        p.seq += 1
        p.run(300)
        assert (p.replies[s]["code"], p.replies[s]["field"]) == (messages.E_MALFORMED, "level")
        p.run(30_000, step=1000)
        assert p.of("heartbeat")[-1]["dropped"] == 5
        assert b.boots == 1


def test_config_nack_names_field_old_config_kept(tmp_path):
    with board(tmp_path) as (b, p):
        p.connect()
        for values, field in (({"base": 101}, "base"), ({"base": 90, "full": 80}, "base"),
                              ({"colour": 1}, "colour"), ({"night": 1}, "night")):
            r = p.command({"type": "config", "values": values})
            assert (r["type"], r["code"], r["field"]) == ("nack", messages.E_BAD_VALUE, field)
        assert json.loads(b.read_flash("config.json"))["app"] == {}
        assert p.command({"type": "config", "values": {"base": 35}})["type"] == "ack"
        assert json.loads(b.read_flash("config.json"))["app"]["base"] == 35
        assert p.command({"type": "light_set", "level": 100, "hold": 0})["type"] == "ack"
        r = p.command({"type": "prelight", "level": 1, "hold": 1, "hops": 1})
        assert (r["type"], r["code"]) == ("nack", messages.E_NOT_SUPPORTED)


def test_event_retransmitted_same_eid_until_ack(tmp_path):
    with board(tmp_path, ack_events=False) as (b, p):
        p.connect()
        b.set_pin(EVT, 1)
        p.run(7000)
        ev = [(s, m) for s, m in p.up if m["type"] == "motion"]
        assert len(ev) == 3                                       # 0, 2, 6 s
        assert {m["eid"] for s, m in ev} == {ev[0][0]} and len({s for s, m in ev}) == 3
        assert ev[0][1]["t"] >= T_2026
        p.send({"type": "ack", "ref": ev[-1][0]})
        p.run(30_000, step=1000)
        assert len(p.of("motion")) == 3


def test_time_command_and_reboot_command(tmp_path):
    with board(tmp_path) as (b, p):
        p.connect()
        assert p.command({"type": "time", "time": T_2026 + 86400})["type"] == "ack"
        assert abs(b.unix_time - T_2026 - 86400) < 5
        r = p.command({"type": "time", "time": 1000})
        assert (r["type"], r["field"]) == ("nack", "time")
        assert p.command({"type": "reboot", "delay": 2})["type"] == "ack"
        p.run(3000)
        assert b.boots == 2 and resets(b) == ["hard"]             # a hard reset, on purpose
        hb = p.of("heartbeat")[-1]
        assert hb["boots"] == 2 and not hb["status"] & messages.ST_SAFE_MODE
        assert json.loads(b.read_flash("state/boot.json"))["fast"] == 1   # this boot only


def test_console_tells_the_boot_the_join_and_each_command(tmp_path):
    """What park-device monitor shows a technician: one line each, without a debugger."""
    with board(tmp_path) as (b, p):
        p.connect()
        assert p.command({"type": "time", "time": 1000})["type"] == "nack"
        assert p.command({"type": "time", "time": T_2026 + 60})["type"] == "ack"
        log = b.log()
        boot = [ln for ln in log if ln.startswith("park-edge %s light_pole fw " % KID.decode())]
        assert boot and boot[0].endswith("boot 1 cause 1"), log
        assert any(ln.startswith("joined the gateway") for ln in log), log
        assert "command time: refused, code 3 field 'time'" in log and "command time: done" in log, log


def test_watchdog_fed_only_by_a_healthy_loop(tmp_path):
    with board(tmp_path) as (b, p):
        p.run(5000)
        assert b.boots == 1 and b.events("wdt_start")[0]["timeout_ms"] == 3000
        b.set_pin(CRASH, 1)                                       # every app step now raises
        p.run(6000)
        assert resets(b) == ["wdt"]                               # the watchdog reset it
        b.set_pin(CRASH, 0)
        p.run(2000)
        assert p.of("heartbeat")[-1]["status"] & 7 == 3           # reset cause reported: watchdog


def test_watchdog_resets_a_hung_step(tmp_path):
    with board(tmp_path, hang_timeout=2.0) as (b, p):
        p.connect()
        b.set_pin(HANG, 1)                                        # step() never returns
        p.run(6000)
        assert resets(b) == ["wdt"] and b.events("wdt_expired")[0]["hung"]
        assert b.boots == 2 and p.of("heartbeat")[-1]["status"] & 7 == 3


def test_safe_mode_after_fast_reboots_and_back(tmp_path):
    with board(tmp_path) as (b, p):
        b.set_pin(BOOTCRASH, 1)                                   # start() crashes in normal mode
        b.reset()
        p.run(4000)
        assert b.boots >= 4                                        # 1 + safe_boots fast reboots
        boots = b.boots
        p.run(5000)
        assert b.boots == boots                                    # safe mode: stable now
        assert b.pin(LAMP) == 1                                    # the App's safe behaviour
        hb = p.of("heartbeat")[-1]
        assert hb["status"] & messages.ST_SAFE_MODE
        f = p.of("fault")
        assert [x["code"] for x in f] == [7] and f[0]["value"] == 4
        r = p.command({"type": "light_set", "level": 10, "hold": 0})
        assert (r["type"], r["code"]) == ("nack", messages.E_NOT_READY)
        b.set_pin(BOOTCRASH, 0)                                    # the fault is gone
        assert p.command({"type": "reboot", "delay": 0})["type"] == "ack"
        p.run(2000)
        assert b.boots == boots + 1
        assert not p.of("heartbeat")[-1]["status"] & messages.ST_SAFE_MODE
        assert p.command({"type": "light_set", "level": 10, "hold": 0})["type"] == "ack"


def test_out_of_memory_is_a_fault_report_and_a_reboot_into_safe_mode(tmp_path):
    """issue 10, bad input: a firmware past its heap budget (by default the role's, with its radio)
    gets MemoryError as on the chip; the gateway receives fault memory, and the board reboots
    into safe mode at once instead of hanging or crash-looping."""
    from sim import vboard
    with board(tmp_path) as (b, p):
        assert b.heap_budget == vboard.esp32_heap_budget("wifi")  # light_pole's budget, Wi-Fi active
        p.connect()
        b.set_pin(HOG, 1)                                         # each step keeps 2 KB more
        p.run(6000)
        (over,) = b.heap_refusals()
        assert over["used"] > over["budget"] == b.heap_budget
        assert b.boots == 2                                       # one reset, straight into safe mode
        assert p.of("heartbeat")[-1]["status"] & messages.ST_SAFE_MODE
        faults = {f["code"]: f["value"] for f in p.of("fault")}
        assert faults[codes.F_MEMORY] > 0 and codes.F_SAFE_MODE in faults
        assert names.FAULTS[codes.F_MEMORY] == "memory"
        assert any("MemoryError" in ln for ln in _flash_log(b))
        assert b.pin(LAMP) == 1                                   # the App's safe behaviour
        p.run(5000)
        assert b.boots == 2                                       # and it stays up


def _flash_log(b):
    try:
        return b.read_flash("state/log.txt").decode().splitlines()
    except FileNotFoundError:
        return []


def test_app_import_failure_ends_in_safe_mode_with_a_usable_console(tmp_path):
    """issue 9.14: the boot is counted before the App is imported, so an App that cannot even be
    imported stops resetting after safe_boots fast boots and leaves the console to the technician."""
    from test_light_bench import repl_exec
    with board(tmp_path, app_source="raise RuntimeError('broken app')\n", console_port=0) as (b, p):
        p.run(5000)
        assert b.boots == 4                                        # 1 + safe_boots (3), then it stays
        assert json.loads(b.read_flash("state/boot.json"))["fast"] == 4
        p.run(5000)
        assert b.boots == 4
        log = _flash_log(b)
        assert len(log) == 4 and "staying in the console" in log[-1]   # no flash writes in a loop
        assert any("staying in the console (REPL)" in ln for ln in b.log())
        assert "42" in repl_exec(b.console_port, "print(6 * 7)")


def test_missing_role_module_is_named_at_once(tmp_path):
    """issue 9.14: light_pole deployed, provisioned as container_sensor: no reset loop, and the
    console says which role module is missing and what is deployed."""
    from test_light_bench import repl_exec
    with board(tmp_path, role="container_sensor", console_port=0) as (b, p):
        p.run(5000)
        assert b.boots == 1
        line = next(ln for ln in b.log() if "cannot start" in ln)
        assert "role module 'container_sensor' is missing" in line and "light_pole" in line
        assert len(_flash_log(b)) == 1
        assert "42" in repl_exec(b.console_port, "print(6 * 7)")
