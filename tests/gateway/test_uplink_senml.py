"""SenML packs (RFC 8428) and the topic scheme."""

from __future__ import annotations

import json

import pytest

from gateway.uplink import SenmlError, TopicError
from gateway.uplink.senml import encode_pack, records_from_message
from gateway.uplink.topics import Topics, check_segment

T0 = 1_800_000_000.0


def test_pack_has_base_name_and_time_on_the_first_record():
    pack = json.loads(encode_pack("stadtpark", "c001", [{"n": "fill", "u": "%", "v": 73},
                                                        {"n": "door", "vb": True, "t": -2}], T0))
    assert pack == [{"bn": "urn:dev:park:stadtpark:c001:", "bt": T0, "n": "fill", "u": "%", "v": 73},
                    {"n": "door", "vb": True, "t": -2}]


def test_protocol_messages_become_records_in_primary_units():
    recs = records_from_message("light_pole", {"type": "light", "level": 40, "state": 2, "ambient": 12, "lamp_ma": 350})
    assert {"n": "lamp_current", "u": "A", "v": 0.35} in recs and {"n": "ambient", "v": 12} in recs
    # "not measured" (None) is left out, never reported as 0
    recs = records_from_message("container_sensor", {"type": "fill", "fill": None, "temp": 21, "batt": 180})
    assert [r["n"] for r in recs] == ["temp", "batt"]
    assert {"n": "batt", "u": "V", "v": 3.6} in recs  # 20 mV steps


def test_heartbeat_hours_and_kib_become_seconds_and_bytes():
    """The heartbeat's wire units (SPEC 5: uptime in hours, heap in KiB) leave the gateway in SenML's."""
    recs = records_from_message("light_pole", {"type": "heartbeat", "uptime": 26, "heap": 48, "boots": 3,
                                               "status": 16, "fw": 10000, "batt": None, "dropped": 0})
    v = {r["n"]: r["v"] for r in recs}
    assert v["uptime"] == 26 * 3600 and v["heap_free"] == 48 * 1024 and "batt" not in v


@pytest.mark.parametrize("records, index, field", [
    ([], None, None),
    ([{"n": "fill"}], 0, "v"),
    ([{"n": "fill", "v": 1}, {"n": "x", "v": 1, "vs": "a"}], 1, "v"),
    ([{"n": "-bad", "v": 1}], 0, "n"),
    ([{"n": "a b", "v": 1}], 0, "n"),
    ([{"n": "temp", "u": "degC", "v": 1}], 0, "u"),
    ([{"n": "temp", "v": float("nan")}], 0, "v"),
    ([{"n": "temp", "v": True}], 0, "v"),
    ([{"n": "door", "vb": 1}], 0, "vb"),
    ([{"n": "t", "v": 1, "extra": 2}], 0, "extra"),
    (["fill"], 0, None),
])
def test_bad_records_are_rejected_with_their_position(records, index, field):
    with pytest.raises(SenmlError) as info:
        encode_pack("stadtpark", "c001", records, T0)
    assert (info.value.index, info.value.field) == (index, field)


def test_bad_base_time_and_role_mismatch():
    with pytest.raises(SenmlError, match="absolute Unix time"):
        encode_pack("stadtpark", "c001", [{"n": "fill", "v": 1}], 12.0)
    with pytest.raises(SenmlError, match="does not send 'light'"):
        records_from_message("container_sensor", {"type": "light", "level": 1, "state": 0, "ambient": 0, "lamp_ma": 0})
    with pytest.raises(SenmlError, match="unknown role"):
        records_from_message("toaster", {"type": "fill"})


def test_topic_scheme():
    t = Topics("park", "gw1")
    assert t.telemetry("stadtpark", "c001") == "park/stadtpark/device/c001/telemetry"
    assert t.event("stadtpark", "c001", "alarm") == "park/stadtpark/device/c001/event/alarm"
    assert t.availability("stadtpark", "l001") == "park/stadtpark/device/l001/availability"
    assert t.status == "park/gateway/gw1/status"
    assert t.command_subscriptions("stadtpark") == ["park/stadtpark/device/+/cmd/req", "park/stadtpark/gateway/cmd/req"]
    assert t.parse_request("park/stadtpark/device/k001/cmd/req") == ("stadtpark", "k001")
    assert t.parse_request("park/stadtpark/gateway/cmd/req") == ("stadtpark", None)
    assert t.parse_request("park/stadtpark/device/k001/cmd/res") is None
    assert t.response_for("park/stadtpark/device/k001/cmd/req") == "park/stadtpark/device/k001/cmd/res"
    nested = Topics("city/berlin", "gw1")
    assert nested.parse_request("city/berlin/tiergarten/device/l001/cmd/req") == ("tiergarten", "l001")


@pytest.mark.parametrize("bad", ["", "+", "#", "a/b", "$SYS", "c 01", "x" * 65, "-a"])
def test_unsafe_topic_levels_are_refused(bad):
    with pytest.raises(TopicError):
        check_segment(bad, "device id")
    with pytest.raises(TopicError):
        Topics("park", "gw1").telemetry("stadtpark", bad)


async def test_unpublishable_input_is_refused_before_it_is_stored(tmp_path):
    from gateway.uplink import PayloadError, Uplink, UplinkConfig

    cfg = UplinkConfig.from_mapping({"sites": ["stadtpark"], "broker": "mqtt://127.0.0.1:1", "reconnect_min_s": 5})
    async with Uplink(cfg, tmp_path / "o.sqlite") as up:
        with pytest.raises(PayloadError, match="not JSON-serialisable"):
            up.event_nowait("stadtpark", "c001", "alarm", {"nonce": b"\x01"}, "c001-1", T0)
        with pytest.raises(PayloadError, match="ts must be"):
            await up.event("stadtpark", "c001", "alarm", {}, "c001-1", float("nan"))
        with pytest.raises(PayloadError, match="event_id"):
            await up.event("stadtpark", "c001", "alarm", {}, "", T0)
        with pytest.raises(TopicError, match="not served"):
            await up.event("schlosspark", "c001", "alarm", {}, "c001-1", T0)
        with pytest.raises(TopicError):
            await up.availability("stadtpark", "c/01", True)
        with pytest.raises(SenmlError):
            await up.telemetry("stadtpark", "c001", "container_sensor", [{"n": "fill", "v": "full"}])
        assert up.stats().outbox_depth == 0 and not up.stats().connected


def test_records_built_from_messages_need_no_second_check():
    """The gateway skips re-validating records it built itself; they must pass the check anyway."""
    from gateway.uplink.senml import _check_record

    for role, msg in (("container_sensor", {"type": "fill", "fill": 73, "temp": -5, "batt": 181}),
                      ("light_pole", {"type": "light", "level": 40, "state": 8, "ambient": 65535, "lamp_ma": 0}),
                      ("locker", {"type": "locker", "open": 1, "locked": 6, "occupied": 7, "pending": 3})):
        recs = records_from_message(role, msg)
        for i, rec in enumerate(recs):
            _check_record(i, rec)
        assert encode_pack("stadtpark", "x1", recs, 1_800_000_000.0, validate=False) == \
            encode_pack("stadtpark", "x1", recs, 1_800_000_000.0)
