"""Helpers for the gateway core tests: a config on disk, a provisioned registry, a daemon in this loop.

The device side is sim.devsim (a CPython TEST PEER built from protocol.codec,
not the firmware) over real TCP sockets and ptys.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import textwrap

from gateway import config as config_mod
from gateway.daemon import Daemon
from sim.devsim import SimDevice
from gateway.registry import Registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))



def dark_longitude(now: dt.datetime | None = None) -> float:
    """A longitude where it is local solar midnight now: at latitude 0 it is surely dark there."""
    now = now or dt.datetime.now(dt.timezone.utc)
    hours = now.hour + now.minute / 60
    lon = ((24 - hours) * 15) % 360
    return lon - 360 if lon > 180 else lon


def bright_longitude(now: dt.datetime | None = None) -> float:
    lon = dark_longitude(now) + 180
    return lon - 360 if lon > 180 else lon


def write_config(tmp, links=(), *, lon=None, lat=0.0, edges=(), extra="", broker="mqtt://127.0.0.1:1",
                 roles="", session="", lighting="") -> str:
    lon = dark_longitude() if lon is None else lon
    link_toml = ""
    for i, lk in enumerate(links):
        link_toml += "[[links]]\n" + "".join('%s = "%s"\n' % kv for kv in lk.items()) + "\n"
    edges_toml = "[" + ", ".join('["%s", "%s"]' % e for e in edges) + "]"
    text = textwrap.dedent("""\
        [gateway]
        state_dir = "{state}"
        api_socket = "{sock}"
        trust_clock = true

        [uplink]
        broker = "{broker}"
        gateway_id = "gw-test"
        reconnect_min_s = 0.05
        reconnect_max_s = 0.5

        [session]
        retry_base = 0.1
        retry_max = 0.4
        retries = 4
        {session}

        {links}
        [sites.stadtpark]
        latitude = {lat}
        longitude = {lon}
        timezone = "UTC"

        [sites.stadtpark.lighting]
        hops = 2
        prelight = 70
        hold = 60
        edges = {edges}
        {lighting}

        [roles.light_pole]
        heartbeat = 60
        [roles.container_sensor]
        heartbeat = 21600
        {roles}
        {extra}
        """).format(state=os.path.join(tmp, "state"), sock=os.path.join(tmp, "api.sock"), broker=broker,
                    links=link_toml, lat=lat, lon=lon, edges=edges_toml, extra=extra, roles=roles,
                    session=session, lighting=lighting)
    path = os.path.join(tmp, "gateway.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def provision(cfg, devices) -> dict[str, bytes]:
    """devices: [(id, role)] -> {id: key}, written to the registry the daemon will open."""
    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    keys = {}
    with Registry(cfg.registry_path) as reg:
        for did, role in devices:
            keys[did] = secrets.token_bytes(32)
            reg.add(did, role, "stadtpark", keys[did])
    return keys


@contextlib.asynccontextmanager
async def running(cfg, **kw):
    d = Daemon(cfg, **kw)
    task = asyncio.create_task(d.run())
    try:
        await asyncio.wait_for(_ready(d, task), 10)
        yield d
    finally:
        d.stop()
        await asyncio.wait_for(task, 10)  # a test may have stopped it already


async def _ready(d, task):
    while not d.ready.is_set():
        if task.done():
            task.result()
        await asyncio.sleep(0.01)


async def until(pred, timeout=5.0, what="condition"):
    """Wait for a condition (not a timing assertion: the timeout only stops a hung test)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("timed out waiting for " + (what() if callable(what) else what))
        await asyncio.sleep(0.01)


async def connected(link, timeout=5.0):
    await asyncio.wait_for(link.connected.wait(), timeout)


def sim(did, keys, role) -> SimDevice:
    return SimDevice(did, keys[did], role)


def load(path):
    return config_mod.load(path)


def parse_links(tmp, links_toml: str, **kw):
    """A config whose [[links]] are given as TOML (keys of any type), parsed as the daemon would."""
    path = write_config(str(tmp), [], **kw)
    text = open(path).read().replace("[sites.stadtpark]\n", links_toml + "\n[sites.stadtpark]\n", 1)
    with open(path, "w") as f:
        f.write(text)
    return load(path)
