"""TLS (server and client certificates) and username/password against a real Mosquitto."""

from __future__ import annotations

import asyncio
import time

import pytest

from sim.broker import mosquitto_password_line
from sim.broker import Mosquitto, free_port
from gateway.uplink import Uplink, UplinkConfig


@pytest.fixture
def tls_broker(pki, tmp_path):
    """TLS + client certificate on ``port``; a plain listener with passwords on ``plain_port`` for the test's subscriber."""
    pwfile = tmp_path / "passwd"
    pwfile.write_text(mosquitto_password_line("gw-test", "right-pass") + "\n"
                      + mosquitto_password_line("consumer", "consumer-pass") + "\n")
    port, plain = free_port(), free_port()
    broker = Mosquitto(port, listen=False, extra=[
        "allow_anonymous false",
        f"password_file {pwfile}",
        f"listener {port} 127.0.0.1",
        f"cafile {pki / 'ca.pem'}",
        f"certfile {pki / 'server.pem'}",
        f"keyfile {pki / 'server.key'}",
        "require_certificate true",
        "tls_version tlsv1.2",
        f"listener {plain} 127.0.0.1",
    ])
    broker.plain_port = plain
    broker.start()
    yield broker
    broker.close()


def tls_config(broker, pki, **kw):
    table = {"sites": ["stadtpark"], "broker": f"mqtts://127.0.0.1:{broker.port}", "gateway_id": "gw-tls",
             "username": "gw-test", "password": "right-pass", "reconnect_min_s": 0.05, "reconnect_max_s": 0.2,
             "tls": {"ca_file": str(pki / "ca.pem"), "cert_file": str(pki / "client.pem"),
                     "key_file": str(pki / "client.key")}}
    for k, v in kw.items():
        if k == "tls":
            table["tls"].update(v)
        else:
            table[k] = v
    return UplinkConfig.from_mapping(table)


async def test_mutual_tls_with_password_delivers(tls_broker, pki, subscriber_factory, tmp_path):
    sub = subscriber_factory(tls_broker, "park/#", username="consumer", password="consumer-pass",
                             port=tls_broker.plain_port)
    async with Uplink(tls_config(tls_broker, pki), tmp_path / "o.sqlite") as up:
        await up.wait_connected(10)
        assert up.stats().broker == f"mqtts://127.0.0.1:{tls_broker.port}"
        await up.event("stadtpark", "k001", "door", {"open": True}, "k001-1", 1.8e9)
        await up.drain(10)
        await sub.until(lambda: sub.on("event/door"), what="the event over TLS")
    assert sub.json_on("event/door")[0]["id"] == "k001-1"


async def _refused(cfg, tmp_path) -> str:
    async with Uplink(cfg, tmp_path / "o.sqlite") as up:
        await up.event("stadtpark", "k001", "door", {"open": True}, "k001-1", 1.8e9)
        deadline = time.monotonic() + 20
        while not up.stats().last_error and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stats = up.stats()
        assert not stats.connected
        assert stats.outbox_depth == 1  # kept for when the configuration is fixed
        return stats.last_error or ""


async def test_wrong_password_is_refused_and_reported(tls_broker, pki, tmp_path):
    err = await _refused(tls_config(tls_broker, pki, password="wrong-pass"), tmp_path)
    assert "authori" in err.lower() or "password" in err.lower(), err


async def test_server_from_another_ca_is_refused(tls_broker, pki, tmp_path):
    err = await _refused(tls_config(tls_broker, pki, tls={"ca_file": str(pki / "other-ca.pem")}), tmp_path)
    assert "certificate verify failed" in err, err
