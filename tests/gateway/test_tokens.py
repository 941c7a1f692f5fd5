"""Booking tokens: `park-gateway token issue` and the backbone's token request sign what a locker accepts."""

import json
import os
import time

import pytest

from gwharness import load, provision, running, write_config
from test_cli import cli
from test_ops import Backbone

from gateway import tokens
from gateway.registry import write_private
from protocol import token
from protocol.cose import Mac


def _key_file(path, key: bytes) -> str:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_private(str(path), key.hex())
    return str(path)


def test_times_in_the_forms_people_write():
    now = 1_800_000_000.0
    assert tokens.parse_time("now", "from", now) == 1_800_000_000
    assert tokens.parse_time("now+2h", "until", now) == 1_800_007_200
    assert tokens.parse_time("+30m", "until", now) == 1_800_001_800
    assert tokens.parse_time("2027-01-15T14:00:00+01:00", "from") == 1_800_018_000
    assert tokens.parse_time(1_800_000_123, "from") == 1_800_000_123
    with pytest.raises(tokens.TokenRequestError) as e:
        tokens.parse_time("tomorrow-ish", "until", now)
    assert e.value.field == "until" and "2026-12-01T14:00" in e.value.message


def test_issue_refuses_what_no_locker_could_use():
    key = os.urandom(32)
    now = time.time()
    for kw, field in (({"comp": 0}, "comp"), ({"comp": 33}, "comp"), ({"not_after": now - 10}, "until"),
                      ({"not_before": now + 7200, "not_after": now + 3600}, "until"),
                      ({"not_after": now + 40 * 86400}, "until"), ({"locker": "no locker!"}, "locker")):
        args = dict(locker="k001", comp=2, not_before=int(now), not_after=int(now + 3600))
        args.update(kw)
        with pytest.raises(tokens.TokenRequestError) as e:
            tokens.issue(key, **args)
        assert e.value.field == field and e.value.code == "bad_value", (kw, e.value)


async def test_cli_issues_a_token_the_locker_accepts_and_never_shows_the_key(tmp_path):
    path = write_config(str(tmp_path), [])
    cfg = load(path)
    key = os.urandom(32)
    kf = _key_file(tokens.key_path(cfg.state_dir, "k001"), key)
    rc, out, err = await cli("--config", path, "token", "issue", "--locker", "k001", "--comp", "2",
                             "--from", "now", "--until", "now+2h", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    raw = bytes.fromhex(doc["token_hex"])
    now = time.time()
    tid, exp = token.verify(Mac(key), raw, "k001", 2, now + 60)
    assert tid == doc["id"] and abs(exp - (now + 7200)) < 30 and doc["comp"] == 2
    assert key.hex() not in out + err
    rc, out, err = await cli("--config", path, "token", "issue", "--locker", "k001", "--comp", "2",
                             "--until", "2099-01-01T00:00", "--id", "7")
    assert rc == 2 and "31 days" in err and "Traceback" not in err, err  # a booking, not a key
    rc, out, err = await cli("--config", path, "token", "issue", "--locker", "k001", "--comp", "2",
                             "--until", "now+1h", "--id", "7")
    assert rc == 0 and "locker k001 compartment 2, token id 7" in out, err
    token.verify(Mac(key), bytes.fromhex(out.splitlines()[0]), "k001", 2, time.time())
    os.chmod(kf, 0o644)
    rc, out, err = await cli("--config", path, "token", "issue", "--locker", "k001", "--comp", "2",
                             "--until", "now+1h", "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["error"]["code"] == "no_booking_key" and "readable by others" in doc["error"]["message"]
    assert doc["error"]["hint"] == "chmod 600 %s" % kf
    rc, out, err = await cli("--config", path, "token", "issue", "--locker", "k002", "--comp", "1",
                             "--until", "now+1h")
    assert rc == 1 and "no_booking_key" in err and "k002.key" in err, err


async def test_the_backbone_asks_for_a_token_and_gets_one(mosquitto, subscriber_factory, tmp_path):
    cfg = load(write_config(str(tmp_path), [], broker=mosquitto.url))
    provision(cfg, [("k001", "locker"), ("l001", "light_pole")])
    key = os.urandom(32)
    _key_file(tokens.key_path(cfg.state_dir, "k001"), key)
    backbone = Backbone(mosquitto, subscriber_factory)
    backbone.responses = subscriber_factory(mosquitto, "park/stadtpark/gateway/cmd/res")
    topic = "park/stadtpark/gateway/cmd/req"
    try:
        async with running(cfg) as d:
            await d.uplink.wait_connected(10)
            until = int(time.time()) + 3600
            backbone.request({"id": "t1", "ts": time.time(), "type": "token", "locker": "k001", "comp": 3,
                              "from": "now", "until": until}, topic=topic)
            backbone.request({"id": "t2", "ts": time.time(), "type": "token", "locker": "l001", "comp": 3,
                              "until": until}, topic=topic)
            backbone.request({"id": "t3", "ts": time.time(), "type": "token", "locker": "k001", "comp": 40,
                              "until": until}, topic=topic)
            ok, not_locker, bad = (await backbone.answer("t1"), await backbone.answer("t2"),
                                   await backbone.answer("t3"))
    finally:
        backbone.close()
    assert ok["ok"] is True, ok
    tid, exp = token.verify(Mac(key), bytes.fromhex(ok["result"]["token_hex"]), "k001", 3, time.time())
    assert exp == until and tid == ok["result"]["id"] and key.hex() not in json.dumps(ok)
    assert not_locker["ok"] is False and not_locker["error"]["code"] == "unknown_device"
    assert "lockers: k001" in not_locker["error"]["message"]
    assert bad["error"]["code"] == "bad_value" and bad["error"]["field"] == "comp"
