"""Operating the gateway: backbone requests, key files, CLI and API lifecycle, config check, systemd."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time

import paho.mqtt.client as paho
import pytest

from gwharness import load, provision, running, write_config

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
        ans = await backbone.answer("u99")
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
