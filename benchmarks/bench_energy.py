#!/usr/bin/env python3
"""The container sensor's energy per wake, measured on a virtual board, and its battery life.

    python -m benchmarks.bench_energy [--wakes 4] [--interval-ms 30] [--json]

The real container_sensor firmware, deployed as .mpy (what `park-device deploy` copies),
runs on a virtual board in real time; its BLE radio reaches the real gateway daemon's BLE
pool through sim.fakeble.FakeBleRadio (a FAKE of the Pi's controller: --interval-ms of
connection interval per write and per notification, 100 ms advertising, a real Mosquitto
takes the uplink). The bin samples every 30 s (its minimum); every other wake the fill
changes by more than app.delta_pct, so wakes alternate between a REPORT (advertise "data
waiting", get connected, hello, fill report, linger, sleep) and a QUIET wake (nothing to
send). The board's own events give each wake's phases, in the board's clock:

  code start   boot event -> radio on: the VM starts, main.py imports the runtime and
               the app from .mpy, reads the config (on the MicroPython WebAssembly VM:
               about an ESP32's speed or faster, FIELD-NOTES; ESP32 ROM/bootloader time
               is not simulated and is an input of the model below)
  radio on     radio on -> radio off: measurement, advertising, the gateway's connect,
               hello/welcome, the report, rt.linger_ms for commands
  measurement  first -> last trigger pulse of the ultrasonic pings (app.pings, app.ping_gap_ms),
               inside "radio on": the link is opened before the app starts
  to sleep     radio off -> deep sleep

Then the model of docs/energy.md turns these into charge per wake and years on a battery,
with the currents and battery figures it states (MODEL below). Figures go into
docs/energy.md by hand.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

# ---------------------------------------------------------------- the model's inputs (docs/energy.md)
MODEL = {
    "boot_s": 0.30,         # ROM + second-stage bootloader + MicroPython start before main.py (assumed, not simulated)
    "cpu_ma": 40.0,         # ESP32 at 160 MHz, radio off (datasheet: modem-sleep 20-68 mA over 80-240 MHz)
    "radio_ma": 100.0,      # BLE active without modem sleep, averaged over RX windows and TX (datasheet: RX 80-90 mA)
    "sensor_mas": 0.5,      # ultrasonic ranging, mA*s per measurement (a JSN-SR04T draws ~30 mA for ~15 ms)
    "sleep_ua": {"module": 15.0, "devkit": 5000.0},  # chip 10 uA + a low-Iq regulator, vs a dev board's LDO/USB bridge
    "batteries_mah": {"2xAA-lithium": 3000, "D-Li-SOCl2-19Ah": 19000},
    "derate": 0.8,          # self-discharge, cold, pulse losses: usable share of the rated capacity
}
SAMPLES_PER_DAY = 96      # app.interval_s 900 (the default)
REPORTS_PER_DAY = 24      # app.report_s 3600 plus level changes: about one report an hour


def write_config(work: Path, broker: int) -> Path:
    text = textwrap.dedent(f"""\
        [gateway]
        state_dir = "{work}/state"
        api_socket = "{work}/api.sock"
        log_level = "warning"
        trust_clock = true
        [uplink]
        broker = "mqtt://127.0.0.1:{broker}"
        gateway_id = "bench-energy"
        [sites.stadtpark]
        latitude = 0.0
        longitude = 0.0
        timezone = "UTC"
        [web]
        listen = ""
        [[links]]
        name = "ble"
        type = "ble"
        max_connections = 5
        """)
    p = work / "gateway.toml"
    p.write_text(text)
    return p


TRIG = 5  # the ultrasonic sensor's trigger pin (reference wiring)


def phases(events: list[dict]) -> list[dict]:
    """Per boot: ms from boot to radio on, radio on to off, off to deep sleep, and the measurement
    (first to last trigger pulse of the ultrasonic pings, while the radio is already on)."""
    out, cur = [], None
    for e in events:
        t = e["type"]
        if t == "boot":
            cur = {"cause": e["cause"], "boot": e["t_ms"]}
            out.append(cur)
        elif cur is None:
            continue
        elif t == "pin" and e.get("pin") == TRIG and e.get("value") == 1:
            cur.setdefault("ping0", e["t_ms"])
            cur["ping1"] = e["t_ms"]
        elif t == "ble_radio" and e.get("on") and "on" not in cur:
            cur["on"] = e["t_ms"]
        elif t == "ble_radio" and not e.get("on") and "off" not in cur:
            cur["off"] = e["t_ms"]
        elif t == "deepsleep" and "sleep" not in cur:
            cur["sleep"] = e["t_ms"]
    rows = []
    for c in out:
        if not {"on", "off", "sleep"} <= set(c):
            continue
        rows.append({"cause": c["cause"], "code_ms": c["on"] - c["boot"], "radio_ms": c["off"] - c["on"],
                     "measure_ms": c["ping1"] - c["ping0"] if "ping0" in c else None,
                     "to_sleep_ms": c["sleep"] - c["off"], "awake_ms": c["sleep"] - c["boot"]})
    return rows


def model(code_s: float, report_radio_s: float, quiet_radio_s: float, m: dict = MODEL,
          samples: int = SAMPLES_PER_DAY, reports: int = REPORTS_PER_DAY) -> dict:
    """Charge per day (mAh) and years on each battery, per sleep-current class."""
    awake_cpu = m["boot_s"] + code_s
    wake_mas = awake_cpu * m["cpu_ma"] + m["sensor_mas"]
    report_mas = wake_mas + report_radio_s * m["radio_ma"]
    quiet_mas = wake_mas + quiet_radio_s * m["radio_ma"]
    awake_mah = (reports * report_mas + (samples - reports) * quiet_mas) / 3600
    awake_s = samples * awake_cpu + reports * report_radio_s + (samples - reports) * quiet_radio_s
    res = {"report_wake_mas": round(report_mas, 1), "quiet_wake_mas": round(quiet_mas, 1),
           "awake_mah_per_day": round(awake_mah, 2), "awake_s_per_day": round(awake_s, 1), "classes": {}}
    for cls, ua in m["sleep_ua"].items():
        sleep_mah = ua / 1000 * (86400 - awake_s) / 3600
        day = awake_mah + sleep_mah
        res["classes"][cls] = {"sleep_mah_per_day": round(sleep_mah, 2), "mah_per_day": round(day, 2),
                               "years": {b: round(cap * m["derate"] / day / 365, 1)
                                         for b, cap in m["batteries_mah"].items()}}
    return res


async def measure(a) -> dict:
    from gateway import config as config_mod
    from gateway.daemon import Daemon
    from gateway.registry import Registry

    from benchmarks.bench_footprint import compile_tree
    from sim import vboard
    from sim.broker import Mosquitto
    from sim.fakeble import FakeBleRadio
    from sim.testbed import KEY, T_2026, deploy_tree
    from sim.vboard_ble import VboardPeripheral

    work = Path(tempfile.mkdtemp(prefix="bench-energy-"))
    img = deploy_tree(work / "img", "container_sensor", "c001", {"trig": 5, "echo": 18, "temp": 34, "batt": 35},
                      {"depth_mm": 1200, "top_mm": 250, "interval_s": 30, "delta_pct": 5}, {"batt_div": 2000},
                      {"kind": "ble", "uart": -1})
    mpy_bytes = compile_tree(img)
    radio = FakeBleRadio(max_connections=5, interval_ms=a.interval_ms, adv_interval_ms=100)
    with Mosquitto() as broker:
        cfg = config_mod.load(str(write_config(work, broker.port)))
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
        with Registry(cfg.registry_path) as reg:
            reg.add("c001", "container_sensor", "stadtpark", KEY)
        d = Daemon(cfg, ble_factory=radio)
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.ready.wait(), 30)
        b = vboard.VirtualBoard(deploy_dir=img, flash_dir=work / "flash", realtime=True, start_time=T_2026,
                                ultrasonic={"trig": TRIG, "echo": 18}, distance_mm=900, console_pty=False, name="c001",
                                record_pins=True)
        await asyncio.to_thread(b.start)
        try:
            b.set_adc(34, uv=500_000 + 10_000 * 14)  # TMP36 at 14 °C
            b.set_adc(35, uv=3900 * 500)              # 3.9 V through the 1:2 divider
            radio.add(VboardPeripheral(b, loop=asyncio.get_running_loop()))
            distance = 900
            for n in range(a.wakes):
                sleeps = len(b.events("deepsleep"))
                async with asyncio.timeout(60):
                    while len(b.events("deepsleep")) <= sleeps:
                        await asyncio.sleep(0.05)
                if n % 2 == 0:  # the next wake reports: the fill moves by 10 %
                    distance -= 95
                    await asyncio.to_thread(b.set_distance_mm, distance)
            rows = phases(b.events())
            served = d.links[0].counters["served"]
        finally:
            await asyncio.to_thread(b.stop)
            d.stop()
            await asyncio.wait_for(task, 15)
    wakes = [r for r in rows if r["cause"] == "deepsleep"]
    report = [r for i, r in enumerate(wakes) if i % 2 == 0]
    quiet = [r for i, r in enumerate(wakes) if i % 2 == 1]

    def med(rs, k):
        xs = [r[k] for r in rs if r[k] is not None]
        return round(statistics.median(xs)) if xs else None

    code_ms = med(wakes, "code_ms")
    cols = ("code_ms", "radio_ms", "measure_ms", "to_sleep_ms", "awake_ms")
    res = {"ble_interval_ms": a.interval_ms, "mpy_bytes": mpy_bytes, "pool_served": served,
           "first_boot": rows[0] if rows else None, "wakes": wakes,
           "report_wake_ms": {k: med(report, k) for k in cols}, "quiet_wake_ms": {k: med(quiet, k) for k in cols},
           "model_inputs": MODEL, "samples_per_day": SAMPLES_PER_DAY, "reports_per_day": REPORTS_PER_DAY}
    if code_ms is not None and report and quiet:
        r_s, q_s = med(report, "radio_ms") / 1000, med(quiet, "radio_ms") / 1000
        res["model"] = model(code_ms / 1000, r_s, q_s)
        res["choices"] = {
            "radio only when a report is due (quiet wakes without radio)": model(code_ms / 1000, r_s, 0.0),
            "radio on after the measurement, only when a report is due": model(
                code_ms / 1000, max(r_s - (med(report, "measure_ms") or 0) / 1000, 0.05), 0.0),
            "report every 15 min instead of hourly": model(code_ms / 1000, r_s, q_s, reports=SAMPLES_PER_DAY),
            "sample every 30 min (48 wakes)": model(code_ms / 1000, r_s, q_s, samples=48),
            "advertise-only report (no connection: ~3 adverts, 30 ms radio)": model(code_ms / 1000, 0.03, q_s),
            "frozen firmware (imports from flash: code start / 3)": model(code_ms / 3000, r_s, q_s),
            "linger_ms 0 (no wait for commands)": model(code_ms / 1000, max(r_s - 0.5, 0.05), q_s),
        }
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wakes", type=int, default=4,
                    help="wakes after the first boot (30 s apart), half of them reports")
    ap.add_argument("--interval-ms", type=float, default=30.0, help="BLE connection interval of the fake radio")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    res = asyncio.run(measure(a))
    print(json.dumps(res, indent=None if a.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
