"""`python -m sim demo --duration` (./dev demo): the simulated Stadtpark comes up by itself and ends by itself.

It starts its own Mosquitto, boots virtual boards with the real firmware (or,
where the MicroPython VM is missing, the labelled CPython simulator) and the
real daemon; walkers make the poles ahead light up.
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
