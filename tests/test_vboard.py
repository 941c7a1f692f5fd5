"""vboard: unmodified firmware in genuine MicroPython on a virtual ESP32.

The demo firmware in tests/vboard_fixture/main.py is written like device code; these
tests drive it through the board's peripherals, clock, link socket and console pty.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sim import mpvm
from sim import vboard
from sim.vboard import VirtualBoard

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup"),
]

FIXTURE = Path(__file__).parent / "vboard_fixture"
T0 = 1_780_000_000  # a fixed RTC start (2026-05-28) keeps logs deterministic


def make_board(tmp_path, cfg=None, **kw):
    flash = tmp_path / "flash"
    flash.mkdir(exist_ok=True)
    if cfg is not None:
        (flash / "config.json").write_text(json.dumps(cfg))
    kw.setdefault("start_time", T0)
    kw.setdefault("ultrasonic", {"trig": 13, "echo": 12})
    return VirtualBoard(deploy_dir=FIXTURE, flash_dir=flash, **kw)


def boots(board):
    return json.loads(board.read_flash("boots.json"))


def test_starts_fast_runs_main_and_stops_cleanly(tmp_path):
    t = time.monotonic()
    b = make_board(tmp_path).start()
    try:
        assert time.monotonic() - t < 3.0  # ~0.3 s here; generous for loaded CI machines
        assert b.log()[0] == f"boot 1 cause {vboard.PWRON_RESET} t {T0}"
        assert b.state()["state"] == "running"
        assert b.console_pty.startswith("/dev/pts/") and b.link_url.startswith("socket://127.0.0.1:")
        proc = b._proc
    finally:
        b.stop()
    assert proc.poll() is not None  # no leaked node process
    assert boots(b)["boots"] == 1   # flash synced to the host dir on stop


def test_virtual_clock_steps_an_hour_quickly(tmp_path):
    with make_board(tmp_path, {"measure_ms": 60_000, "poll_ms": 1000}) as b:
        t = time.monotonic()
        assert b.advance(3_600_000) == 3_600_000
        wall = time.monotonic() - t
        measures = [ln for ln in b.log() if ln.startswith("measure")]
        assert len(measures) == 61  # t=0 and every virtual minute
        assert measures[-1].endswith("ticks 3600000")
        assert b.unix_time == T0 + 3600
        assert wall < 30, wall  # blink at 2 Hz + 1 s link poll: ~11 k task wake-ups


def test_pwm_adc_ultrasonic_and_temperature(tmp_path):
    with make_board(tmp_path, {"measure_ms": 1000}, distance_mm=500) as b:
        assert b.pwm_freq(2) == 1000
        duty = {b.pwm_duty(2)}
        b.advance(500)
        duty.add(b.pwm_duty(2))
        assert duty == {0, 40000}
        b.set_adc(34, uv=1_234_000)
        b.set_distance_mm(1000)
        b.advance(1000)
        f = b.log()[-1].split()
        assert abs(int(f[1]) - 1000) <= 3 and f[3] == "1234"  # echo at 20 C; firmware assumes 343 m/s
        b.set_temperature_c(-10)  # slower sound -> longer echo -> firmware over-reads
        b.advance(1000)
        assert int(b.log()[-1].split()[1]) > 1030
        b.set_distance_mm(None)   # no echo: time_pulse_us returns -1
        b.advance(1000)
        assert b.log()[-1].startswith("measure None mm")


def test_ultrasonic_needs_a_trigger_pulse(tmp_path):
    fw = tmp_path / "main.py"
    fw.write_text(textwrap.dedent("""
        import machine
        trig, echo = machine.Pin(13, machine.Pin.OUT), machine.Pin(12, machine.Pin.IN)
        print(machine.time_pulse_us(echo, 1, 30000))
        trig.on(); trig.off()
        print(machine.time_pulse_us(echo, 1, 30000), machine.time_pulse_us(echo, 1, 30000))
        trig.on(); trig.off()
        print(machine.time_pulse_us(echo, 1, 1000))
    """))
    with VirtualBoard(firmware_files={"main.py": fw}, flash_dir=tmp_path / "f",
                      ultrasonic={"trig": 13, "echo": 12}, distance_mm=1715, temperature_c=20) as b:
        assert b.log() == ["-1", "9988 -1", "-2"]  # 2 * 1.715 m / 343.42 m/s


def test_machine_refuses_outside_a_board():
    # plain mpvm has no vboard: the machine module must refuse clearly, not fake values
    r = mpvm.run(code="import machine", mounts={vboard.VMACHINE_DIR: "/vm"}, paths=["/vm"])
    assert r.returncode == 1 and "vboard" in r.stderr


def test_pin_irq_drives_a_lock_pulse(tmp_path):
    with make_board(tmp_path) as b:
        b.set_pin(4, 0)           # button pressed: falling edge IRQ
        b.advance(100)
        assert b.pin(5) == 1      # lock coil energised
        b.advance(300)
        assert b.pin(5) == 0
        pulses = b.events("pulse")
        assert [(p["pin"], p["ms"]) for p in pulses] == [(5, 300)]
        b.set_pin(4, 1)           # rising edge: not subscribed
        b.advance(400)
        assert len(b.events("pulse")) == 1


def test_deepsleep_reboots_with_cause_time_and_flash(tmp_path):
    with make_board(tmp_path, {"sleep_after_ms": 2000, "deepsleep_ms": 600_000, "measure_ms": 3_600_000}) as b:
        b.advance(2000)
        assert b.state()["state"] == "asleep"
        assert [e["ms"] for e in b.events("deepsleep")] == [600_000]
        b.advance(599_000)
        assert b.boots == 1       # still asleep
        b.advance(1000)
        assert b.boots == 2
        assert b.log()[-2] == f"boot 2 cause {vboard.DEEPSLEEP_RESET} t {T0 + 602}"
        assert boots(b)["causes"] == [vboard.PWRON_RESET, vboard.DEEPSLEEP_RESET]
        b.advance(2000)           # and it keeps cycling
        b.advance(600_000)
        assert boots(b)["causes"][-1] == vboard.DEEPSLEEP_RESET and b.boots == 3


def test_wdt_expiry_and_machine_reset_reboot_with_cause(tmp_path):
    with make_board(tmp_path, {"wdt_ms": 2000, "feed_for_ms": 5000, "measure_ms": 3_600_000}) as b:
        b.advance(4000)
        assert b.events("wdt_start") and b.events("wdt_feed")
        assert not b.events("reset")
        b.advance(4000)           # feeding stopped at 5 s: bites 2 s after the last feed
        assert [e["cause"] for e in b.events("reset")] == ["wdt"]
        assert boots(b)["causes"] == [vboard.PWRON_RESET, vboard.WDT_RESET]


def test_power_cycle_keeps_flash_loses_rtc_memory(tmp_path):
    flash = tmp_path / "flash"
    fw = tmp_path / "main.py"
    fw.write_text(textwrap.dedent("""
        import machine
        rtc = machine.RTC()
        print("mem", rtc.memory(), "cause", machine.reset_cause())
        rtc.memory(b"kept-in-rtc")
        with open("seed.txt") as f:
            print("seed", f.read())
        try:
            open("missing.txt")
        except OSError as e:
            import errno
            print("enoent", e.errno == errno.ENOENT)
    """))
    b = VirtualBoard(firmware_files={"main.py": fw}, flash_dir=flash)
    b.write_flash("seed.txt", "from-host")
    with b:
        assert b.log() == ["mem b'' cause 1", "seed from-host", "enoent True"]
        b.reset()
        assert b.log()[-3] == f"mem b'kept-in-rtc' cause {vboard.HARD_RESET}"
        b.power_cycle(off_ms=5000)
        assert b.log()[-3] == f"mem b'' cause {vboard.PWRON_RESET}"
        assert [e["cause"] for e in b.events("boot")] == ["power", "hard", "power"]


def test_link_uart_both_ways_with_pyserial(tmp_path):
    serial = pytest.importorskip("serial")
    with make_board(tmp_path, {"measure_ms": 3_600_000}) as b:
        ser = serial.serial_for_url(b.link_url, timeout=1)
        got = bytearray()

        def received(n):
            # socket:// in_waiting is 0/1 (readable or not), so collect what is there
            def check(_):
                while ser.in_waiting:
                    got.extend(ser.read(ser.in_waiting))
                return len(got) >= n
            return check
        try:
            ser.write(b"\x00\x01binary\xff\n")
            b.run_until(received(15), step_ms=10, max_ms=10_000)
            assert bytes(got) == b"echo:\x00\x01binary\xff\n"
            ser.write(b"reset\n")
            b.run_until(lambda _: b.events("reset"), step_ms=10, max_ms=10_000)
            assert b.events("reset")[0]["cause"] == "hard"
        finally:
            ser.close()


def test_mpremote_exec_and_fs_cp_over_console_pty(tmp_path):
    mpremote = shutil.which("mpremote") or str(Path(sys.executable).with_name("mpremote"))
    if not Path(mpremote).exists():
        pytest.skip("mpremote not installed")
    with make_board(tmp_path, {"measure_ms": 3_600_000}) as b:
        def mpr(*args):
            r = subprocess.run([mpremote, "connect", b.console_pty, *args], capture_output=True, text=True,
                               timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
            return r.stdout
        assert mpr("exec", "import machine; print(machine.reset_cause(), 6 * 7)").strip() == "1 42"
        # the REPL shares the VM with the still-running firmware
        b.advance(1000)
        assert "boots.json" in mpr("exec", "import os; print(sorted(os.listdir()))")
        src = tmp_path / "upload.json"
        src.write_text('{"site": "stadtpark"}')
        mpr("fs", "cp", str(src), ":upload.json")
        assert (b.flash_path / "upload.json").read_text() == '{"site": "stadtpark"}'
        mpr("fs", "cp", ":boots.json", str(tmp_path / "boots.json"))
        assert json.loads((tmp_path / "boots.json").read_text())["boots"] == 1
        b.advance(1000)           # firmware still running after the REPL sessions
        assert b.state()["state"] == "running"


def test_hang_without_wdt_is_reported(tmp_path):
    fw = tmp_path / "main.py"
    fw.write_text(textwrap.dedent("""
        import asyncio
        async def main():
            await asyncio.sleep_ms(1000)
            while True:
                pass
        asyncio.run(main())
    """))
    with VirtualBoard(firmware_files={"main.py": fw}, flash_dir=tmp_path / "f", hang_timeout=1) as b:
        b.advance(500)
        with pytest.raises(vboard.BoardHungError):
            b.advance(1000)


def test_hang_with_wdt_resets(tmp_path):
    fw = tmp_path / "main.py"
    fw.write_text(textwrap.dedent("""
        import asyncio, machine
        print("cause", machine.reset_cause())
        async def main():
            wdt = machine.WDT(timeout=3000)
            await asyncio.sleep_ms(1000)
            if machine.reset_cause() != machine.WDT_RESET:
                while True:
                    pass
            while True:
                wdt.feed()
                await asyncio.sleep_ms(1000)
        asyncio.run(main())
    """))
    with VirtualBoard(firmware_files={"main.py": fw}, flash_dir=tmp_path / "f", hang_timeout=1) as b:
        b.advance(2000)
        assert b.log() == ["cause 1", f"cause {vboard.WDT_RESET}"]
        b.advance(10_000)
        assert b.boots == 2


def test_rtc_and_time_module_follow_virtual_clock(tmp_path):
    fw = tmp_path / "main.py"
    fw.write_text(textwrap.dedent("""
        import asyncio, time, machine, clock
        async def main():
            t0 = time.ticks_ms()
            await asyncio.sleep(90)          # unmodified asyncio code runs on virtual time
            print("dt", time.ticks_diff(time.ticks_ms(), t0), clock.time() - %d)
            machine.RTC().datetime((2030, 1, 2, 0, 3, 4, 5, 0))
            print("rtc", machine.RTC().datetime()[:7], time.localtime()[:6])
            clock.set_time(%d)
            print("set", clock.now())
        asyncio.run(main())
    """ % (T0, T0 + 5)))
    with VirtualBoard(firmware_files={"main.py": fw}, flash_dir=tmp_path / "f", start_time=T0) as b:
        b.advance(90_000)
        assert b.log() == ["dt 90000 90", "rtc (2030, 1, 2, 2, 3, 4, 5) (2030, 1, 2, 3, 4, 5)",
                           f"set {T0 + 5}"]


def test_gc_high_water_is_sampled(tmp_path):
    with make_board(tmp_path, {"measure_ms": 1000}) as b:
        b.advance(5000)
        peak = b.gc_high_water()
        assert 1000 < peak <= 134 * 1024 * 2
        b.reset_gc_high_water()
        assert b.gc_high_water() == 0
        b.advance(2000)
        assert b.gc_high_water() > 0


def test_realtime_mode(tmp_path):
    with make_board(tmp_path, {"measure_ms": 100}, realtime=True) as b:
        b.wait_for(lambda: len([ln for ln in b.log() if ln.startswith("measure")]) >= 3, timeout=10)
        with pytest.raises(vboard.VboardError):
            b.advance(10)


def test_port_busy_is_typed(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        with pytest.raises(vboard.PortBusyError):
            make_board(tmp_path, link_port=s.getsockname()[1]).start()
    finally:
        s.close()


def test_firmware_crash_is_recorded(tmp_path):
    fw = tmp_path / "main.py"
    fw.write_text("import asyncio\nasync def main():\n    raise ValueError('bad config')\nasyncio.run(main())\n")
    with VirtualBoard(firmware_files={"main.py": fw}, flash_dir=tmp_path / "f") as b:
        crash = b.events("fw_crash")
        assert crash and "ValueError: bad config" in crash[0]["traceback"]
        assert any("ValueError: bad config" in ln for ln in b.log())


async def test_async_context_manager(tmp_path):
    async with make_board(tmp_path, {"measure_ms": 1000}) as b:
        await b.aadvance(2000)
        assert len([ln for ln in b.log() if ln.startswith("measure")]) == 3


def test_clock_module_falls_back_off_board():
    # vclock/clock work in any MicroPython: without a vboard they use time/asyncio
    code = textwrap.dedent("""
        import clock
        t0 = clock.ticks_ms()
        await clock.sleep_ms(20)
        print(clock.VIRTUAL, clock.ticks_diff(clock.ticks_ms(), t0) >= 15, clock.now() > 1600000000)
    """)
    r = mpvm.run(code=code, mounts={vboard.VMACHINE_DIR: "/vm"}, paths=["/vm"])
    assert r.ok, r.stderr
    assert r.stdout.strip() == "False True True"


def test_realtime_wdt_bites_a_spinning_firmware(tmp_path):
    fw = tmp_path / "main.py"
    fw.write_text(textwrap.dedent("""
        import asyncio, machine
        print("cause", machine.reset_cause())
        async def main():
            wdt = machine.WDT(timeout=300)
            if machine.reset_cause() == machine.WDT_RESET:
                while True:
                    wdt.feed()
                    await asyncio.sleep_ms(100)
            await asyncio.sleep_ms(100)
            while True:
                pass
        asyncio.run(main())
    """))
    with VirtualBoard(firmware_files={"main.py": fw}, flash_dir=tmp_path / "f", realtime=True) as b:
        b.wait_log(f"cause {vboard.WDT_RESET}", timeout=10)
        assert [e["cause"] for e in b.events("reset")] == ["wdt"]


def test_virtual_sleeps_do_not_retain_heap(tmp_path):
    # awaiting a JS promise per sleep would keep ~50 B per await alive on the Python
    # heap until the JS GC runs; vclock's Event-based sleep must not (footprint numbers)
    fw = tmp_path / "main.py"
    fw.write_text(textwrap.dedent("""
        import asyncio, gc
        from clock import sleep_ms
        async def main():
            gc.collect()
            a = gc.mem_alloc()
            for i in range(5000):
                await sleep_ms(1)
            gc.collect()
            print("retained", gc.mem_alloc() - a)
        asyncio.run(main())
    """))
    with VirtualBoard(firmware_files={"main.py": fw}, flash_dir=tmp_path / "f") as b:
        b.advance(5001)
        assert int(b.log()[-1].split()[1]) < 16 * 1024
        assert b.gc_high_water() < 64 * 1024


def test_host_reaches_other_uarts(tmp_path):
    fw = tmp_path / "main.py"
    fw.write_text(textwrap.dedent("""
        import asyncio, machine
        reader = machine.UART(2, 9600)
        async def main():
            while True:
                if reader.any():
                    reader.write(b"ack:" + reader.read())
                await asyncio.sleep_ms(50)
        asyncio.run(main())
    """))
    with VirtualBoard(firmware_files={"main.py": fw}, flash_dir=tmp_path / "f") as b:
        b.uart_write(2, b"\x02card\x03")
        b.advance(100)
        assert b.uart_read(2) == b"ack:\x02card\x03"
        assert b.uart_read(2) == b""


HOG = textwrap.dedent("""
    import asyncio
    hoard = []

    async def main():
        while True:
            try:
                hoard.append(bytearray(4000))
                await asyncio.sleep_ms(10)
            except MemoryError as e:
                print("MemoryError after %d KB: %s" % (len(hoard) * 4, e))
                return

    asyncio.run(main())
""")


def test_heap_budget_raises_memoryerror_in_the_firmware_as_on_the_chip(tmp_path):
    """The Python heap may grow to the budget and no further: the firmware's own code sees
    MemoryError (and the board an event), as an ESP32 without PSRAM would answer."""
    budget = vboard.esp32_heap_budget("wifi")
    assert budget == vboard.ESP32_FREE_HEAP - vboard.RADIO_HEAP_COST["wifi"] == 89_000
    (tmp_path / "hog.py").write_text(HOG)
    with VirtualBoard(firmware_files={"main.py": tmp_path / "hog.py"}, flash_dir=tmp_path / "a", start_time=T0,
                      heap_budget=budget) as b:
        b.advance(1000)
        line = b.wait_log(r"MemoryError after \d+ KB")
        kb = int(line.split()[2])
        # close to the budget (the simulator's own machine/clock modules are not counted: C on a chip)
        assert budget // 1000 - 24 <= kb <= budget // 1000 + 24, line
        (ev,) = b.heap_refusals()
        assert budget < ev["used"] <= budget + 4200 and ev["budget"] == budget
        assert b.events("fw_crash") == []       # the firmware's own handler caught it


POOLS = textwrap.dedent("""
    import asyncio, gc, micropython, _vboard_boot

    async def main():
        await asyncio.sleep_ms(0)
        gc.collect()
        print("@@", gc.mem_alloc(), _vboard_boot._base)
        micropython.qstr_info()

    asyncio.run(main())
""")


def _pool_arrays(text: str) -> int:
    import re
    m = re.search(r"n_str_data_bytes=(\d+), n_total_bytes=(\d+)", text)
    assert m, text
    return int(m.group(2)) - int(m.group(1))


def test_the_simulators_names_are_not_counted_but_the_pools_they_grew_are(tmp_path):
    """The budget leaves out the simulator's own modules (C on a chip) and asyncio (this port's
    scheduler: a chip's firmware never imports it), but not the qstr pools' arrays their ~350
    names made grow: a firmware interns more names than that, so a chip allocates the same pools
    for the firmware's own (docs/virtual-boards.md)."""
    (tmp_path / "pools.py").write_text(POOLS)
    with VirtualBoard(firmware_files={"main.py": tmp_path / "pools.py"}, flash_dir=tmp_path / "a", start_time=T0,
                      heap_budget=vboard.esp32_heap_budget("wifi")) as b:
        b.advance(100)
        _, live, base = b.wait_log(r"^@@ \d+ \d+").split()
        pools = _pool_arrays("\n".join(b.log()))
    plain = mpvm.run(code="import asyncio, gc, micropython\nawait asyncio.sleep_ms(0)\ngc.collect()\n"
                          "print(gc.mem_alloc())\nmicropython.qstr_info()\n")
    plain.check()
    grown = pools - _pool_arrays(plain.stdout)
    assert grown > 3000                                   # the simulator's names took pools a plain VM has not
    aio = mpvm.run(code="import gc\ngc.collect()\na = gc.mem_alloc()\nimport asyncio, asyncio.core\ngc.collect()\n"
                        "print(gc.mem_alloc() - a)\n")
    aio.check()
    assert int(aio.stdout.split()[-1]) > 2000             # asyncio's classes and module dicts
    # what the simulator's modules hold, pools included, and asyncio (the plain VM imported it too)
    sim_heap = int(live) - int(plain.stdout.split()[0]) + int(aio.stdout.split()[-1])
    assert abs(int(base) - (sim_heap - grown)) < 1500, (base, sim_heap, grown)  # main.py's own few objects


def test_without_a_budget_the_heap_grows_like_a_pc(tmp_path):
    (tmp_path / "hog.py").write_text(HOG)
    with VirtualBoard(firmware_files={"main.py": tmp_path / "hog.py"}, flash_dir=tmp_path / "b", start_time=T0) as b:
        b.advance(1000)
        assert not any("MemoryError" in ln for ln in b.log())
        assert b.heap_refusals() == []


def test_the_name_pools_cost_what_the_model_says_at_every_size():
    """bench_footprint.pool_bytes (and the worker's poolBytes) is what MicroPython allocates for n
    interned names: checked against qstr_info in the VM across the pool boundaries (620, 1260)."""
    from benchmarks.bench_footprint import pool_bytes, qstr_info
    for n in (0, 300, 700, 1300):
        r = mpvm.run(code="import micropython\nfor i in range(%d):\n    getattr(int, 'zq%%d' %% i, None)\n"
                          "micropython.qstr_info()\n" % n)
        r.check()
        names, arrays = qstr_info(r.stdout.splitlines())
        assert names >= n and arrays == pool_bytes(names), (n, names, arrays)
    assert pool_bytes(620) < pool_bytes(621) and pool_bytes(1260) < pool_bytes(1261)


NAMES = textwrap.dedent("""
    import asyncio, gc, _vboard_boot
    o = type("O", (), {})()
    for i in range(900):            # a firmware's worth of names: with the simulator's, past 1,260
        setattr(o, "zq%d" % i, None)
    del o
    hoard = [bytearray(10000) for _ in range(6)]

    async def main():
        await asyncio.sleep_ms(10)
        print("held", _vboard_boot._base)

    asyncio.run(main())
""")


def test_the_budget_counts_the_name_pools_a_chip_would_allocate(tmp_path):
    """A program with ~900 names of its own on a board whose simulator adds ~390: the board holds a
    seventh pool (9 KiB of arrays) that a chip with the program's names alone never allocates. A
    budget between the two figures holds: the worker's heap_recheck counts the pools for the
    program's names (before, the board refused it)."""
    (tmp_path / "names.py").write_text(NAMES)
    with VirtualBoard(firmware_files={"main.py": tmp_path / "names.py"}, flash_dir=tmp_path / "a", start_time=T0,
                      heap_budget=vboard.esp32_heap_budget("wifi")) as b:
        b.advance(200)
        base = int(b.wait_log(r"^held \d+").split()[1])
        board = b.live_heap() - base            # what the board holds of the program's, all pools included
        assert not b.heap_refusals()
    budget = board - 4500                     # less than the board's figure, more than a chip's (-9 KiB)
    assert budget >= 64 * 1024, board
    with VirtualBoard(firmware_files={"main.py": tmp_path / "names.py"}, flash_dir=tmp_path / "b", start_time=T0,
                      heap_budget=budget) as b:
        b.advance(200)
        b.wait_log(r"^held \d+")
        b.advance(200)
        assert b.heap_refusals() == []
