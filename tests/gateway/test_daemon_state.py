"""The daemon and its state directory: registry changes reach it at once (issue 9.5);
one daemon per state directory, a second one says so in one line (issue 9.15)."""

import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys

import pytest

from gwharness import ROOT, connected, load, provision, running, sim, until, write_config

from gateway.daemon import Daemon
from sim.devsim import SimLink
from gateway.registry import Registry
from gateway.statelock import AlreadyRunning


@pytest.fixture
async def park(tmp_path):
    link = await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}]))
    keys = provision(cfg, [("l001", "light_pole")])
    async with running(cfg) as d:
        await connected(link)
        yield d, link, keys, cfg
    await link.close()


async def test_device_added_by_another_tool_is_accepted_at_once(park):
    d, link, keys, cfg = park
    key = secrets.token_bytes(32)
    with Registry(cfg.registry_path) as reg:  # what `park-gateway device add` and provisioning do
        reg.add("c009", "container_sensor", "stadtpark", key)
    dev = link.add(sim("c009", {"c009": key}, "container_sensor"))
    w = await dev.hello(timeout=3)
    assert w["echo"] == dev.nonce and d.sessions.by_id["c009"].online


async def test_removed_and_rekeyed_devices_change_at_once_even_by_a_direct_sqlite_write(park):
    d, link, keys, cfg = park
    dev = link.add(sim("l001", keys, "light_pole"))
    await dev.hello()
    new_key = secrets.token_bytes(32)
    db = sqlite3.connect(cfg.registry_path)
    with db:
        db.execute("UPDATE devices SET key = ? WHERE id = 'l001'", (new_key,))
    await until(lambda: d.sessions.by_id["l001"].dev.key == new_key, what="new key loaded")
    with pytest.raises(TimeoutError):
        await dev.hello(timeout=1)  # the old key is refused now
    fresh = link.add(sim("l001", {"l001": new_key}, "light_pole"))
    await fresh.hello(timeout=3)
    with db:
        db.execute("DELETE FROM devices WHERE id = 'l001'")
    db.close()
    await until(lambda: "l001" not in d.sessions.devices, what="device dropped")
    with pytest.raises(LookupError):
        d.device("l001")


async def test_second_daemon_on_the_same_state_dir_is_refused_in_one_line(park, tmp_path):
    d, link, keys, cfg = park
    with pytest.raises(AlreadyRunning) as ei:
        await Daemon(cfg).run()
    assert str(ei.value) == "another park-gateway runs on %s (pid %d)" % (cfg.state_dir, os.getpid())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "run", "--config", cfg.path,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert err.decode().splitlines() == ["park-gateway: another park-gateway runs on %s (pid %d)"
                                         % (cfg.state_dir, os.getpid())]
    assert d.status()["devices"]["total"] == 1  # the running daemon is untouched
