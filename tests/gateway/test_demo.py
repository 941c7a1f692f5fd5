"""`python -m sim demo --duration` (./dev demo): the simulated Stadtpark comes up by itself and ends by itself.

It starts its own Mosquitto, boots virtual boards with the real firmware (or,
where the MicroPython VM is missing, the labelled CPython simulator) and the
real daemon; walkers make the poles ahead light up. The boards talk over their
radios (bins BLE, poles and the locker Wi-Fi) unless `--links serial`.
"""

import asyncio
import json
import sys

from pathlib import Path

from sim.demo import firmware_ready

ROOT = Path(__file__).resolve().parents[2]


async def test_demo_runs_the_park_and_stops_by_itself():
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "sim", "demo", "--duration", "20",
                                             "--night", "--json", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 150)
    assert p.returncode == 0, err.decode()[-3000:]
    lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    summary = lines[-1]["summary"]
    assert summary["firmware"] == firmware_ready()[0]
    assert summary["devices"] == 10 and summary["devices_online"] == 10
    assert summary["prelights"] > 0 and summary["published"] > 20
    last = lines[-2]
    assert last["status"]["backbone"]["connected"] is True
    roles = {d["id"]: d["role"] for d in last["devices"]}
    assert sorted(set(roles.values())) == ["container_sensor", "light_pole", "locker"]
    # over the radios by default: bins through the BLE pool, poles and the locker on the TCP server
    assert summary["links"] == "radio"
    via = {d["id"]: d["link"].split("/")[0] for d in last["devices"]}
    assert {via[i] for i, r in roles.items() if r == "container_sensor"} == {"ble"}, via
    assert {via[i] for i, r in roles.items() if r != "container_sensor"} == {"wifi"}, via


async def test_demo_over_the_serial_links():
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "sim", "demo", "--duration", "20", "--night",
                                             "--json", "--links", "serial", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 150)
    assert p.returncode == 0, err.decode()[-3000:]
    lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    summary = lines[-1]["summary"]
    assert summary["links"] == "serial" and summary["devices_online"] == 10 and summary["prelights"] > 0
    assert {d["link"] for d in lines[-2]["devices"]} == {d["id"] for d in lines[-2]["devices"]}  # a url link each


async def test_simulator_fallback_runs_over_the_radios_too():
    """Without the MicroPython VM the demo's CPython peers take the same radios: bins on the BLE pool."""
    code = ("import sys, sim.demo as d; d.firmware_ready = lambda: (False, 'test: no VM'); "
            "sys.exit(d.main(duration=10, as_json=True, night=True))")
    p = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 120)
    assert p.returncode == 0, err.decode()[-3000:]
    lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    summary = lines[-1]["summary"]
    assert summary["firmware"] is False and summary["links"] == "radio" and summary["devices_online"] == 10
    assert summary["published"] > 0 and summary["prelights"] > 0
    via = {d["id"]: d["link"].split("/")[0] for d in lines[-2]["devices"]}
    assert via["c001"] == "ble" and via["l001"] == "wifi" and via["k001"] == "wifi"
