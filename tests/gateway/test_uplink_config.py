"""Uplink configuration: defaults, and errors that name the key (TLS, credentials, caps)."""

from __future__ import annotations

import os

import pytest

from gateway.uplink import UplinkConfig, UplinkConfigError
from gateway.uplink.mqtt import tls_context


def make(**kw):
    table = {"sites": ["stadtpark"]}
    table.update(kw)
    return UplinkConfig.from_mapping(table)


def error_for(**kw) -> UplinkConfigError:
    with pytest.raises(UplinkConfigError) as info:
        make(**kw)
    return info.value


def test_defaults_and_broker_url():
    cfg = make()
    assert (cfg.host, cfg.port, cfg.tls.enabled, cfg.inflight, cfg.topic_prefix) == ("127.0.0.1", 1883, False, 100, "park")
    assert cfg.outbox.durability == "full" and cfg.outbox.sqlite_synchronous == "FULL"
    cfg = make(broker="mqtts://backbone.example.org", gateway_id="gw1")
    assert (cfg.host, cfg.port, cfg.tls.enabled, cfg.mqtt_client_id) == ("backbone.example.org", 8883, True, "park-gw-gw1")
    assert tls_context(cfg).check_hostname is True


@pytest.mark.parametrize("table, key, words", [
    ({"sites": []}, "uplink.sites", "at least one site"),
    ({"sites": ["stadt/park"]}, "uplink.sites[0]", "topic level"),
    ({"sites": ["ok", 3]}, "uplink.sites[1]", "must be a string"),
    ({"broker": "http://x:1883"}, "uplink.broker", "mqtt://HOST:PORT"),
    ({"broker": "mqtt://user:pw@x:1883"}, "uplink.broker", "password_file"),
    ({"broker": "mqtt://x:99999"}, "uplink.broker", "bad port"),
    ({"inflight": 0}, "uplink.inflight", "between 1 and 1000"),
    ({"inflight": True}, "uplink.inflight", "got a boolean"),
    ({"keepalive_s": "30"}, "uplink.keepalive_s", "must be an integer"),
    ({"reconnect_min_s": 5, "reconnect_max_s": 1}, "uplink.reconnect_max_s", ">= reconnect_min_s"),
    ({"topic_prefix": "park/#"}, "uplink.topic_prefix", "topic level"),
    ({"gateway_id": "gw 1"}, "uplink.gateway_id", "topic level"),
    ({"brokr": "mqtt://x"}, "uplink.brokr", "unknown key"),
    ({"outbox": {"max_mesages": 5}}, "uplink.outbox.max_mesages", "unknown key"),
    ({"outbox": {"max_messages": 1}}, "uplink.outbox.max_messages", "between"),
    ({"outbox": {"durability": "fast"}}, "uplink.outbox.durability", "one of"),
    ({"password": "secret"}, "uplink.username", "needs a username"),
    ({"tls": {"enabled": False}, "broker": "mqtts://x"}, "uplink.tls.enabled", "needs TLS"),
    ({"tls": {"verify_hostname": False}}, "uplink.tls.enabled", "TLS is off"),
    ({"tls": "yes"}, "uplink.tls", "must be a table"),
])
def test_bad_values_name_their_key(table, key, words):
    sites = table.pop("sites", ["stadtpark"])
    err = error_for(sites=sites, **table) if sites is not None else None
    assert err.key == key
    assert words in str(err) and str(err).startswith(key)


def test_tls_file_errors_name_the_file_and_key(pki, tmp_path):
    err = error_for(broker="mqtts://x", tls={"ca_file": str(tmp_path / "missing.pem")})
    assert err.key == "uplink.tls.ca_file" and "file not found" in str(err) and "missing.pem" in str(err)

    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    err = error_for(broker="mqtts://x", tls={"ca_file": str(junk)})
    assert err.key == "uplink.tls.ca_file" and "not a PEM CA certificate" in str(err)

    err = error_for(broker="mqtts://x", tls={"cert_file": str(pki / "client.pem")})
    assert err.key == "uplink.tls.key_file" and "both cert_file and key_file" in str(err)

    os.chmod(pki / "client.key", 0o644)
    try:
        err = error_for(broker="mqtts://x", tls={"cert_file": str(pki / "client.pem"), "key_file": str(pki / "client.key")})
        assert err.key == "uplink.tls.key_file" and "other users" in str(err)
    finally:
        os.chmod(pki / "client.key", 0o600)

    err = error_for(broker="mqtts://x", tls={"cert_file": str(pki / "client.pem"), "key_file": str(pki / "ca.key")})
    assert err.key == "uplink.tls.cert_file" and "do not match" in str(err)
    assert "PRIVATE KEY" not in str(err)

    err = error_for(broker="mqtt://x", tls={"ca_file": str(pki / "ca.pem")})
    assert err.key == "uplink.tls.enabled"

    cfg = make(broker="mqtts://x", tls={"ca_file": str(pki / "ca.pem"), "cert_file": str(pki / "client.pem"),
                                        "key_file": str(pki / "client.key"), "verify_hostname": False})
    assert cfg.tls.enabled and tls_context(cfg).check_hostname is False
    assert "client.key" not in repr(cfg)


def test_password_file_must_be_private_and_is_never_shown(tmp_path):
    pw = tmp_path / "mqtt.pw"
    pw.write_text("s3cret-pass\n")
    os.chmod(pw, 0o644)
    err = error_for(username="gw", password_file=str(pw))
    assert err.key == "uplink.password_file" and "chmod 600" in str(err)
    os.chmod(pw, 0o600)
    cfg = make(username="gw", password_file=str(pw))
    assert cfg.password == "s3cret-pass"
    assert "s3cret" not in repr(cfg)
    err = error_for(username="gw", password="x", password_file=str(pw))
    assert err.key == "uplink.password_file" and "not both" in str(err)
