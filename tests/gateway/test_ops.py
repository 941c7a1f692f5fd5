"""Operating the gateway: backbone requests, key files, CLI and API lifecycle, config check, systemd."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

import paho.mqtt.client as paho
import pytest

from gwharness import ROOT, connected, load, provision, running, until, write_config

from gateway import sdnotify, timesync
from gateway.api import ApiServer
from sim.devsim import SimDevice, SimLink
from gateway.registry import Registry, RegistryError
from gateway.uplink import Uplink, UplinkConfig
from gateway.uplink.requests import RequestLog

REQ = "park/stadtpark/device/k001/cmd/req"


def uplink_config(broker, **kw) -> UplinkConfig:
    table = {"sites": ["stadtpark"], "broker": broker.url, "gateway_id": "gw-test",
             "reconnect_min_s": 0.05, "reconnect_max_s": 0.5, "keepalive_s": 5}
    table.update(kw)
    return UplinkConfig.from_mapping(table)


class Backbone:
    """The city's side: publishes requests, reads the answers by id."""

    def __init__(self, broker, subscriber_factory):
        self.responses = subscriber_factory(broker, "park/stadtpark/+/+/cmd/res")
        self.pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.pub.connect(broker.host, broker.port)
        self.pub.loop_start()

    def request(self, body: dict, topic: str = REQ, retain: bool = False) -> None:
        self.pub.publish(topic, json.dumps(body), qos=1, retain=retain).wait_for_publish()

    def answers(self, corr) -> list[dict]:
        return [b for b in (json.loads(m.payload) for m in self.responses.messages) if b.get("id") == corr]

    async def answer(self, corr, n: int = 1) -> dict:
        await self.responses.until(lambda: len(self.answers(corr)) >= n, 15, "answer to %s" % corr)
        return self.answers(corr)[-1]

    def close(self) -> None:
        self.pub.loop_stop()
        self.pub.disconnect()


@pytest.fixture
def backbone(mosquitto, subscriber_factory):
    b = Backbone(mosquitto, subscriber_factory)
    yield b
    b.close()


# -- 9.3 fresh backbone requests only


async def test_retained_and_old_requests_are_answered_stale_and_never_run(mosquitto, backbone, tmp_path):
    calls = []

    async def handler(site, device_id, command, corr):
        calls.append(corr)
        return {"done": True}

    # a retained unlock sits on the broker before the gateway starts (and after every reconnect)
    backbone.request({"id": "ret-1", "ts": time.time(), "type": "unlock", "comp": 3, "reason": "x"}, retain=True)
    async with Uplink(uplink_config(mosquitto, request_max_age_s=60), tmp_path / "outbox.sqlite") as up:
        up.on_command(handler)
        await up.wait_connected(10)
        ret = await backbone.answer("ret-1")
        backbone.request({"id": "old-1", "ts": time.time() - 3600, "type": "unlock", "comp": 3, "reason": "x"})
        backbone.request({"id": "future-1", "ts": time.time() + 3600, "type": "reboot"})
        backbone.request({"id": "no-ts", "type": "reboot"})
        backbone.request({"id": "new-1", "ts": time.time(), "type": "reboot"})
        old, future, no_ts, new = [await backbone.answer(c) for c in ("old-1", "future-1", "no-ts", "new-1")]
    backbone.request({"id": "ret-1", "ts": 0}, retain=True)  # clear it for the broker's next user
    assert ret["ok"] is False and ret["error"]["code"] == "stale" and "retained" in ret["error"]["message"]
    assert old["ok"] is False and old["error"]["code"] == "stale" and "60 s" in old["error"]["message"]
    assert future["error"]["code"] == "stale"
    assert no_ts["error"]["code"] == "malformed" and "ts" in no_ts["error"]["message"]
    assert new["ok"] is True
    assert calls == ["new-1"]  # nothing stale or malformed ever reached the handler


async def test_answered_ids_survive_a_restart_and_the_log_is_bounded(mosquitto, backbone, tmp_path):
    calls = []

    async def handler(site, device_id, command, corr):
        calls.append(corr)
        return {"n": len(calls)}

    body = {"id": "once-1", "ts": time.time(), "type": "unlock", "comp": 3, "reason": "ticket 1"}
    for run in range(2):
        async with Uplink(uplink_config(mosquitto), tmp_path / "outbox.sqlite") as up:
            up.on_command(handler)
            await up.wait_connected(10)
            body["ts"] = time.time()  # a fresh re-send of the same request id
            backbone.request(body)
            await backbone.answer("once-1", run + 1)
            await up.drain(10)
    first, second = backbone.answers("once-1")
    assert calls == ["once-1"]  # run once, although the gateway restarted in between
    assert first == second and first["result"] == {"n": 1}
    assert os.stat(tmp_path / "requests.sqlite").st_mode & 0o077 == 0

    log = RequestLog(tmp_path / "bounded.sqlite", limit=5)
    log.open()
    for i in range(50):
        log.begin(("t", str(i)))
        log.finish(("t", str(i)), b"answer")
    log.close()
    with sqlite3.connect(tmp_path / "bounded.sqlite") as db:
        assert [r[0] for r in db.execute("SELECT id FROM answered ORDER BY n")] == ["45", "46", "47", "48", "49"]


async def test_a_request_running_at_a_crash_is_stale_after_restart(mosquitto, backbone, tmp_path):
    log = RequestLog(tmp_path / "requests.sqlite")
    log.open()
    log.begin(("park/stadtpark/device/k001/cmd/res", "crash-1"))  # taken, never answered: the gateway died
    log.close()
    calls = []

    async def handler(site, device_id, command, corr):
        calls.append(corr)
        return {}

    async with Uplink(uplink_config(mosquitto), tmp_path / "outbox.sqlite") as up:
        up.on_command(handler)
        await up.wait_connected(10)
        backbone.request({"id": "crash-1", "ts": time.time(), "type": "unlock", "comp": 1, "reason": "x"})
        ans = await backbone.answer("crash-1")
    assert ans["error"]["code"] == "stale" and calls == []


async def test_unlock_out_of_range_is_bad_value_naming_the_field(mosquitto, backbone, tmp_path, caplog):
    cfg = load(write_config(str(tmp_path), [], broker=mosquitto.url))
    provision(cfg, [("k001", "locker")])
    async with running(cfg) as d:
        await d.uplink.wait_connected(10)
        backbone.request({"id": "u99", "ts": time.time(), "type": "unlock", "comp": 99, "reason": "ticket 7"})
        backbone.request({"id": "u-why", "ts": time.time(), "type": "unlock", "comp": 1})
        ans = await backbone.answer("u99")
        why = await backbone.answer("u-why")
    assert why["error"]["code"] == "bad_value" and why["error"]["field"] == "reason"
    assert ans["ok"] is False
    assert ans["error"]["code"] == "bad_value" and ans["error"]["field"] == "comp"
    assert "99" in ans["error"]["message"]
    assert not [r for r in caplog.records if r.exc_info]  # no traceback logged for a bad field


# -- 9.8 one key-file reader


def test_registry_import_refuses_a_64_byte_hex_key_and_open_files(tmp_path):
    f = tmp_path / "l001.json"
    f.write_text(json.dumps({"id": "l001", "role": "light_pole", "site": "stadtpark", "key_hex": "ab" * 64}))
    os.chmod(f, 0o600)
    with Registry(str(tmp_path / "reg.sqlite")) as reg:
        with pytest.raises(RegistryError, match="key_hex: must be 64 hex characters"):
            reg.import_file(str(f))
        f.write_text(json.dumps({"id": "l001", "role": "light_pole", "site": "stadtpark", "key_hex": "ab" * 32}))
        os.chmod(f, 0o640)
        with pytest.raises(RegistryError, match="readable by others.*chmod 600"):
            reg.import_file(str(f))
        os.chmod(f, 0o600)
        assert reg.import_file(str(f)) == ["l001"]
        assert reg.get("l001").key == b"\xab" * 32


# -- 9.2 command lifecycle: CLI and API


async def cli(*args, timeout=60):
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", *args,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), timeout)
    return p.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def gateway_with(tmp_path, devices):
    link = await SimLink.tcp_server()
    path = write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}])
    cfg = load(path)
    keys = provision(cfg, devices)
    sims = {did: link.add(SimDevice(did, keys[did], role)) for did, role in devices}
    try:
        async with running(cfg) as d:
            await connected(link)
            yield path, d, sims
    finally:
        await link.close()


async def test_cli_timeout_is_one_line_and_the_command_is_never_carried_out(tmp_path):
    async with gateway_with(tmp_path, [("k001", "locker")]) as (path, d, sims):
        t0 = time.monotonic()
        rc, out, err = await cli("--config", path, "unlock", "k001", "--comp", "3", "--reason", "t", "--timeout", "1.5s")
        took = time.monotonic() - t0
        assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
        # an offline device fails at once unless the operator chose to wait (--queue-for)
        assert "offline" in err and "--queue-for" in err and took < 10  # the CLI's flag, not the API's field
        rc, out, err = await cli("--config", path, "unlock", "k001", "--comp", "3", "--reason", "t",
                                 "--timeout", "1s", "--json")
        assert rc == 1 and json.loads(out)["ok"] is False and "offline" in json.loads(out)["error"]["code"]
        await sims["k001"].hello()  # the locker comes back after the operator was told it failed
        await asyncio.sleep(1.0)
        assert [c for c in sims["k001"].commands if c["type"] == "unlock"] == []
        # online, but every answer is lost: the deadline runs from the moment it was asked
        sims["k001"].answer = lambda msg: "silent"
        t0 = time.monotonic()
        rc, out, err = await cli("--config", path, "reboot", "k001", "--timeout", "1.5s")
        assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "timeout" in err and "cancelled" in err and time.monotonic() - t0 < 10, err
        sent = len(sims["k001"].commands)
        await asyncio.sleep(2.0)
        assert len(sims["k001"].commands) == sent  # not retransmitted after the operator was told it failed


async def test_queue_for_keeps_the_command_for_an_offline_device(tmp_path):
    async with gateway_with(tmp_path, [("k001", "locker")]) as (path, d, sims):
        rc, out, err = await cli("--config", path, "unlock", "k001", "--comp", "2", "--reason", "parcel",
                                 "--timeout", "1s", "--queue-for", "1m")
        assert rc == 0, err
        assert "queued" in out and "1m" in out
        await sims["k001"].hello()
        await until(lambda: [c for c in sims["k001"].commands if c["type"] == "unlock"], what="the queued unlock")
        assert sims["k001"].commands[-1]["comp"] == 2
        rc, out, err = await cli("--config", path, "reboot", "k001", "--queue-for", "soon")
        assert rc == 2 and "not a duration" in err


async def test_a_queued_command_is_shown_and_can_be_cancelled(tmp_path):
    async with gateway_with(tmp_path, [("k001", "locker")]) as (path, d, sims):
        rc, out, err = await cli("--config", path, "unlock", "k001", "--comp", "4", "--reason", "parcel",
                                 "--timeout", "1s", "--queue-for", "1h")
        assert rc == 0, err
        rc, out, err = await cli("--config", path, "device", "k001", "--json")
        [queued] = json.loads(out)["commands"]
        assert queued["type"] == "unlock" and queued["state"] == "queued"
        rc, out, err = await cli("--config", path, "cancel", "k001", str(queued["id"]))
        assert rc == 0 and "cancelled" in out, err
        rc, out, err = await cli("--config", path, "cancel", "k001", str(queued["id"]))
        assert rc == 1 and "unknown_command" in err  # nothing left to cancel
        rc, out, err = await cli("--config", path, "cancel", "zz99", "1")
        assert rc == 1 and "unknown_device" in err
        await sims["k001"].hello()  # the locker comes back: the cancelled unlock never reaches it
        await asyncio.sleep(1.0)
        assert [c for c in sims["k001"].commands if c["type"] == "unlock"] == []
        assert json.loads((await cli("--config", path, "device", "k001", "--json"))[1])["commands"] == []


async def test_api_client_going_away_cancels_its_command(tmp_path):
    started, cancelled = asyncio.Event(), asyncio.Event()
    calls = []

    class Daemon:
        async def command(self, device_id, cmd, deadline=None, queue_for=0.0):
            calls.append((device_id, cmd["type"], deadline is not None, queue_for))
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    sock = str(tmp_path / "api.sock")
    api = ApiServer(sock, Daemon())
    await api.start()
    try:
        reader, writer = await asyncio.open_unix_connection(sock)
        writer.write(b'{"op": "command", "id": "k001", "command": {"type": "reboot"}, "timeout": 600}\n')
        await writer.drain()
        await asyncio.wait_for(started.wait(), 5)
        writer.close()  # the operator pressed Ctrl-C
        await asyncio.wait_for(cancelled.wait(), 5)
        # a pipelined second request is still answered after the first
        reader, writer = await asyncio.open_unix_connection(sock)
        writer.write(b'{"op": "command", "id": "k001", "command": {"type": "reboot"}, "timeout": 0.2}\n'
                     b'{"op": "nope"}\n')
        await writer.drain()
        first, second = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(2)]
        writer.close()
        assert first["error"]["code"] == "timeout" and second["error"]["code"] == "unknown_op"
        assert calls[0] == ("k001", "reboot", True, 0.0)
    finally:
        await api.stop()


async def test_tail_of_an_unknown_id_answers_at_once_and_errors_say_their_code_once(tmp_path):
    async with gateway_with(tmp_path, [("l001", "light_pole")]) as (path, d, sims):
        await sims["l001"].hello()
        t0 = time.monotonic()
        rc, out, err = await cli("--config", path, "tail", "zz99", timeout=20)
        assert rc == 1 and "unknown_device" in err and "zz99" in err and time.monotonic() - t0 < 10
        sims["l001"].answer = lambda msg: (3, "debounce_ms")  # the pole refuses the value
        rc, out, err = await cli("--config", path, "config", "set", "l001", "debounce_ms=9999")
        assert rc == 1 and err.count("bad_value") == 1 and "debounce_ms" in err, err
        rc, out, err = await cli("--config", path, "light", "l001", "--level", "140")
        assert rc == 1 and "level" in err and "Traceback" not in err
        assert not re.search(r"(\w+): \1", err), err
        rc, out, err = await cli("--config", path, "pickups", "--site", "stadpark")  # a typo lists the sites
        assert rc == 1 and "unknown_site" in err and "sites: stadtpark" in err


# -- 9.7 config check runs every check the daemon's start runs


def _edit(path: str, old: str, new: str) -> None:
    text = open(path).read()
    assert old in text
    open(path, "w").write(text.replace(old, new, 1))


async def test_config_check_fails_what_the_daemon_start_would_fail_on(tmp_path):
    good = write_config(str(tmp_path), [])
    rc, out, err = await cli("config", "check", good, "--json")
    assert rc == 0 and json.loads(out)["ok"] is True, out + err
    sock = str(tmp_path / "api.sock")
    cases = {
        "gateway.api_group": ('api_socket = "%s"' % sock, 'api_socket = "%s"\napi_group = "no-such-grp-9x"' % sock,
                              "does not exist"),
        "gateway.state_dir": ('state_dir = "%s"' % (tmp_path / "state"), 'state_dir = "%s"' % (tmp_path / "file" / "s"),
                              "is a file"),
        "gateway.api_socket": ('api_socket = "%s"' % sock, 'api_socket = "%s/%s.sock"' % (tmp_path, "x" * 110),
                               "at most 107"),
    }
    (tmp_path / "file").write_text("not a directory")
    for key, (old, new, why) in cases.items():
        bad = str(tmp_path / ("bad-%s.toml" % key.split(".")[1]))
        open(bad, "w").write(open(good).read())
        _edit(bad, old, new)
        rc, out, err = await cli("config", "check", bad, "--json")
        r = json.loads(out)
        assert r["ok"] is False
        r = dict(r["error"], ok=False, error=r["error"]["message"])
        assert rc == 2 and r["ok"] is False and r["key"] == key and r["file"] == bad and why in r["error"], (key, r)
        # the daemon's start runs the same check: one line naming file and key, no traceback, no socket left
        rc, out, err = await cli("run", "--config", bad, timeout=30)
        assert rc == 2 and "Traceback" not in err and bad in err and key in err, (key, err)
        assert not os.path.exists(sock)


async def test_config_check_refuses_key_files_open_to_others(tmp_path):
    path = write_config(str(tmp_path), [])
    cfg = load(path)
    provision(cfg, [("l001", "light_pole")])
    os.chmod(cfg.registry_path, 0o644)
    rc, out, err = await cli("config", "check", path)
    assert rc == 2 and "registry.sqlite is readable by others" in out and "gateway.state_dir" in out
    os.chmod(cfg.registry_path, 0o600)
    rc, out, err = await cli("config", "check", path)
    assert rc == 0, out + err
    async with running(cfg):  # the outbox (no keys) is created with the default mode; a restart still passes
        pass
    os.chmod(cfg.outbox_path, 0o644)
    rc, out, err = await cli("config", "check", path)
    assert rc == 0, out + err


# -- 9.13 systemd: the unit verifies, the notify protocol, time handed out only when synchronised

UNIT = os.path.join(ROOT, "gateway", "systemd", "park-gateway.service")


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is missing: install the Debian package `systemd` (./dev setup does)")
    stub = tmp_path / "park-gateway"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = open(UNIT).read()
    for line in ("Type=notify", "WatchdogSec=30", "NotifyAccess=main", "RestartPreventExitStatus=2",
                 "RuntimeDirectoryMode=0750"):
        assert line in text.splitlines(), line
    unit = tmp_path / "park-gateway.service"
    unit.write_text(text.replace("/usr/local/bin/park-gateway", str(stub)))  # verify checks the binary exists
    r = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "" and r.stdout.strip() == "", r.stdout + r.stderr
    unit.write_text(text.replace("/usr/local/bin/park-gateway", str(stub)).replace("Type=notify", "Type=notifyy"))
    r = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "notifyy" in r.stdout + r.stderr  # the check can see a mistake


async def test_notify_ready_watchdog_status_and_stopping_over_a_real_datagram_socket(tmp_path):
    path = write_config(str(tmp_path), [])
    addr = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    sock.setblocking(False)
    env = dict(os.environ, NOTIFY_SOCKET=addr, WATCHDOG_USEC="200000")
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "run", "--config", path, env=env,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    got: list[str] = []
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(30):
            while got.count("WATCHDOG=1") < 3:
                got.append((await loop.sock_recv(sock, 4096)).decode())
        assert os.path.exists(str(tmp_path / "api.sock"))  # READY came after the API socket was up
        p.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            while "STOPPING=1" not in got:
                got.append((await loop.sock_recv(sock, 4096)).decode())
        assert await asyncio.wait_for(p.wait(), 30) == 0
    finally:
        if p.returncode is None:
            p.kill()
        sock.close()
    assert got[0] == "READY=1"
    status = [m for m in got if m.startswith("STATUS=")]
    assert status and "0 of 0 devices online" in status[0] and "clock synchronised" in status[0]
    assert got[-1] == "STOPPING=1"


def test_notify_is_silent_outside_systemd_and_speaks_abstract_sockets():
    assert sdnotify.notify("READY=1", env={}) is False
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # not ours
    name = "park-test-%d" % os.getpid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        assert sdnotify.notify("WATCHDOG=1", env={"NOTIFY_SOCKET": "@" + name}) is True
        assert s.recv(100) == b"WATCHDOG=1"


async def test_devices_get_time_only_from_a_synchronised_gateway(tmp_path, monkeypatch):
    monkeypatch.setattr(timesync, "MARKER", str(tmp_path / "synchronized"))
    monkeypatch.setattr(timesync, "kernel_synchronised", lambda: False)
    monkeypatch.setattr(timesync, "RECHECK_S", 0.0)
    monkeypatch.setattr(timesync, "_cache", {})
    link = await SimLink.tcp_server()
    path = write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}])
    _edit(path, "trust_clock = true", "trust_clock = false")
    cfg = load(path)
    keys = provision(cfg, [("k001", "locker")])
    dev = link.add(SimDevice("k001", keys["k001"], "locker"))
    hb = {"type": "heartbeat", "uptime": 5, "heap": 48, "boots": 1, "status": 0, "fw": 10000, "batt": None,
          "dropped": 0}
    try:
        async with running(cfg) as d:
            await connected(link)
            w = await dev.hello()
            assert w["time"] == 0  # below SPEC's valid range: the device keeps its own clock
            dev.send(hb)  # "my time is not valid"
            await asyncio.sleep(0.5)
            assert [c for c in dev.commands if c["type"] == "time"] == []
            assert d.status()["clock"] == {"synchronised": False, "source": None}
            rc, out, err = await cli("--config", path, "status")
            assert rc == 0 and "clock: NOT synchronised" in out
            (tmp_path / "synchronized").write_text("")  # systemd-timesyncd reached its server
            dev.send(hb)
            await until(lambda: [c for c in dev.commands if c["type"] == "time"], what="a time command")
            assert dev.commands[-1]["time"] > 1_700_000_000
            assert d.status()["clock"] == {"synchronised": True, "source": "timesyncd"}
    finally:
        await link.close()


# -- 9.6 operators can use the CLI under the shipped unit (documented install steps, as root)

AS_USER = """
import os, pwd, sys
import asyncio, concurrent.futures.thread, ctypes, grp, json, logging, sqlite3, ssl  # noqa: F401,E401
# (all imported before the switch: the test's interpreter lives where the new user may not read)
import gateway.api, gateway.cli, gateway.control, gateway.daemon, gateway.links, gateway.preflight  # noqa: F401
import gateway.registry, gateway.sdnotify, gateway.session, gateway.timesync, gateway.uplink  # noqa: F401
user = sys.argv[1]
pw = pwd.getpwnam(user)
os.umask(0o077)                      # the unit's UMask=
os.initgroups(user, pw.pw_gid)       # what systemd does for User=: supplementary groups from /etc/group
os.setgid(pw.pw_gid)
os.setuid(pw.pw_uid)
os.chdir("/")
sys.exit(gateway.cli.main(sys.argv[2:]))
"""


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


async def as_user(user: str, *args: str, wait: bool = True):
    p = await asyncio.create_subprocess_exec(sys.executable, "-c", AS_USER, user, *args,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    if not wait:
        return p
    out, err = await asyncio.wait_for(p.communicate(), 60)
    return p.returncode, out.decode(), err.decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it adds a throwaway user and group (useradd, groupadd)")
async def test_operators_in_api_group_use_the_cli_under_the_units_directories():
    tag = os.urandom(3).hex()
    gw, ops, op, outsider = "pgw" + tag, "pops" + tag, "pop" + tag, "pout" + tag
    base = tempfile.mkdtemp(prefix="park-install-", dir="/tmp")
    os.chmod(base, 0o755)
    made_users, made_group, daemon = [], False, None
    try:
        # docs/operations.md, Install
        _run("useradd", "--system", "--home", base + "/state", "--shell", "/usr/sbin/nologin", gw)
        made_users.append(gw)
        _run("groupadd", "--system", ops)
        made_group = True
        _run("usermod", "-aG", ops, gw)
        for u in (op, outsider):
            _run("useradd", "--system", "--shell", "/usr/sbin/nologin", u)
            made_users.append(u)
        _run("usermod", "-aG", ops, op)
        # what systemd makes of the unit: StateDirectory= 0700, RuntimeDirectory= 0750, both owned by the service
        run_dir, state, etc = base + "/run/park-gateway", base + "/state", base + "/etc"
        for d, mode in ((run_dir, 0o750), (state, 0o700)):
            os.makedirs(d)
            shutil.chown(d, gw, gw)
            os.chmod(d, mode)
        os.makedirs(base + "/run", exist_ok=True)
        os.chmod(base + "/run", 0o755)
        os.makedirs(etc, mode=0o750)
        shutil.chown(etc, "root", ops)
        cfg_path = write_config(etc, [])
        _edit(cfg_path, 'state_dir = "%s"' % os.path.join(etc, "state"), 'state_dir = "%s"' % state)
        _edit(cfg_path, 'api_socket = "%s"' % os.path.join(etc, "api.sock"),
              'api_socket = "%s/api.sock"\napi_group = "%s"' % (run_dir, ops))
        shutil.chown(cfg_path, "root", ops)
        os.chmod(cfg_path, 0o640)
        rc, out, err = await as_user(gw, "config", "check", cfg_path)
        assert rc == 0, out + err
        daemon = await as_user(gw, "run", "--config", cfg_path, wait=False)
        await until(lambda: os.path.exists(run_dir + "/api.sock") or daemon.returncode is not None, 20,
                    "the daemon's socket")
        assert daemon.returncode is None, (await daemon.stderr.read()).decode()
        rc, out, err = await as_user(op, "--config", cfg_path, "status")
        assert rc == 0 and "devices: 0 online" in out, err
        rc, out, err = await as_user(outsider, "--socket", run_dir + "/api.sock", "status")
        assert rc == 3 and "no permission" in err
        st = os.stat(run_dir)
        assert st.st_mode & 0o777 == 0o750 and grp.getgrgid(st.st_gid).gr_name == ops
    finally:
        if daemon is not None and daemon.returncode is None:
            daemon.terminate()
            await asyncio.wait_for(daemon.wait(), 30)
        for u in made_users:
            subprocess.run(["userdel", u], capture_output=True, timeout=60)
        if made_group:
            subprocess.run(["groupdel", ops], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


async def test_device_add_reads_key_files_through_the_one_reader(tmp_path):
    path = write_config(str(tmp_path), [])
    cfg = load(path)
    os.makedirs(cfg.state_dir, mode=0o700)
    key = os.urandom(32)
    kf = tmp_path / "c009.key"
    kf.write_text(key.hex() + "\n")  # 64 hex characters: what a technician may well write
    os.chmod(kf, 0o644)
    add = ("--config", path, "device", "add", "c009", "--role", "container_sensor", "--site", "stadtpark",
           "--key-file", str(kf))
    rc, out, err = await cli(*add)
    assert rc == 1 and "readable by others" in err and "chmod 600" in err and "Traceback" not in err
    with Registry(cfg.registry_path) as reg:
        assert [d.id for d in reg.all()] == []
    os.chmod(kf, 0o600)
    rc, out, err = await cli(*add, "--json")
    assert rc == 0, err
    with Registry(cfg.registry_path) as reg:
        assert reg.get("c009").key == key  # 32 bytes, not the 64 bytes of its hex text
    kf.write_bytes(os.urandom(48))
    rc, out, err = await cli(*add, "--replace")
    assert rc == 1 and "32-byte key" in err


async def test_watchdog_pings_come_from_the_event_loop_so_a_stuck_loop_stops_them(monkeypatch):
    sent = []
    monkeypatch.setattr(sdnotify, "notify", lambda m, env: sent.append((time.monotonic(), m)) or True)

    class Daemon:
        ready = asyncio.Event()

        def status(self):
            return {"devices": {"online": 0, "total": 0}, "backbone": {}, "clock": {}}

    d = Daemon()
    d.ready.set()
    async with sdnotify.Supervisor(d, env={"NOTIFY_SOCKET": "@unused", "WATCHDOG_USEC": "100000"}):
        await asyncio.sleep(0.3)
        stuck = time.monotonic()
        time.sleep(0.6)  # the event loop is stuck (a blocking call): systemd must see the pings stop
        freed = time.monotonic()
        await asyncio.sleep(0.3)
    pings = [t for t, m in sent if m == "WATCHDOG=1"]
    assert sent[0][1] == "READY=1" and sent[-1][1] == "STOPPING=1"
    assert [t for t in pings if t < stuck] and [t for t in pings if t > freed]
    assert not [t for t in pings if stuck < t < freed]
