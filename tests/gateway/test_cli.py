"""`park-gateway` CLI against a running daemon over its Unix socket (real processes, real socket)."""

import asyncio
import json
import os
import stat
import sys

from gwharness import connected, load, provision, running, sim, write_config

from sim.devsim import SimLink
from gateway.registry import write_private


async def cli(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", *args, env=env,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 60)
    return p.returncode, out.decode(), err.decode()


async def test_status_devices_device_commands_and_json(tmp_path):
    link = await SimLink.tcp_server()
    path = write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}])
    cfg = load(path)
    keys = provision(cfg, [("l001", "light_pole"), ("k001", "locker")])
    pole = link.add(sim("l001", keys, "light_pole"))
    locker = link.add(sim("k001", keys, "locker"))
    async with running(cfg):
        await connected(link)
        await pole.hello()
        await locker.hello()
        assert stat.S_IMODE(os.stat(cfg.api_socket).st_mode) == 0o600
        rc, out, err = await cli("--config", path, "status", "--json")
        assert rc == 0, err
        st = json.loads(out)
        assert st["devices"] == {"total": 2, "online": 2, "offline": 0}
        assert st["links"][0]["name"] == "vb0" and st["links"][0]["connected"] is True
        assert st["backbone"]["connected"] is False and st["backbone"]["outbox_depth"] >= 2
        rc, out, _ = await cli("--config", path, "status")
        assert rc == 0 and "devices: 2 online, 0 offline" in out and "DISCONNECTED" in out
        rc, out, _ = await cli("--config", path, "devices")
        assert rc == 0 and "l001" in out and "k001" in out and "online" in out
        rc, out, _ = await cli("--config", path, "device", "l001", "--json")
        d = json.loads(out)
        assert d["id"] == "l001" and d["role"] == "light_pole" and d["online"] and "key" not in d
        rc, out, err = await cli("--config", path, "light", "l001", "--level", "40", "--json")
        assert rc == 0, err
        assert json.loads(out)["result"] == "ok" and pole.commands[-1]["type"] == "light_set"
        rc, out, err = await cli("--config", path, "unlock", "k001", "--comp", "3", "--reason", "cli test")
        assert rc == 0 and "acknowledged" in out
        assert locker.commands[-1]["comp"] == 3 and locker.commands[-1]["reason"] == "cli test"
        rc, out, err = await cli("--config", path, "config", "set", "l001", "debounce_ms=20", "daynight=sensor")
        assert rc == 0, err
        assert pole.commands[-1] == {"type": "config", "values": {"debounce_ms": 20, "daynight": "sensor"}}
        # refusals are typed, with the reason
        rc, out, err = await cli("--config", path, "light", "l001", "--level", "140", "--json")
        assert rc == 1 and "level" in json.loads(out)["error"]["message"]
        rc, out, err = await cli("--config", path, "device", "zz99")
        assert rc == 1 and "unknown_device" in err
        # tail shows live traffic
        tail = asyncio.create_task(cli("--config", path, "tail", "--count", "1", "--json"))
        while not tail.done():  # until the tail process is attached and has seen one
            pole.send({"type": "light", "level": 40, "state": 2, "ambient": 3, "lamp_ma": 300})
            await asyncio.wait([tail], timeout=0.2)
        rc, out, err = await tail
        ev = json.loads(out.splitlines()[0])
        assert ev["kind"] == "telemetry" and ev["device"] == "l001" and ev["msg"]["level"] == 40
        # device add through the CLI reaches the running daemon
        kf = tmp_path / "c009.key"
        write_private(str(kf), "")
        kf.write_bytes(os.urandom(32))
        rc, out, err = await cli("--config", path, "device", "add", "c009", "--role", "container_sensor",
                                 "--site", "stadtpark", "--key-file", str(kf), "--json")
        assert rc == 0, err
        assert json.loads(out)["daemon"] == "reloaded"
        rc, out, _ = await cli("--config", path, "device", "c009", "--json")
        assert rc == 0 and json.loads(out)["online"] is False
    await link.close()


async def test_config_check_and_no_daemon(tmp_path):
    good = write_config(str(tmp_path), [])
    rc, out, _ = await cli("config", "check", good, "--json")
    assert rc == 0 and json.loads(out)["ok"] is True
    bad = tmp_path / "bad.toml"
    bad.write_text(open(good).read().replace("hops = 2", 'hops = "many"'))
    rc, out, _ = await cli("config", "check", str(bad), "--json")
    r = json.loads(out)
    r = r["error"]
    assert rc == 2 and r["key"] == "sites.stadtpark.lighting.hops" and r["line"] > 1
    rc, out, err = await cli("config", "check", str(bad))
    assert rc == 2 and "bad.toml:%d: sites.stadtpark.lighting.hops" % r["line"] in out
    rc, out, err = await cli("--config", good, "status")
    assert rc == 3 and "no park-gateway daemon" in err
