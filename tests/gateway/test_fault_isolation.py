"""Fault isolation (issue 9.1): nothing raised after the session rules reaches a link or the event loop.

What a control loop, the SenML builder or an observer raises is counted (status
"faults"), logged once per kind, and the message is still stored and acked.
"""

import asyncio
import collections
import logging
import sqlite3

from hypothesis import given, settings, strategies as st

from gwharness import connected, load, provision, running, sim, until, write_config

from gateway.control.waste import Waste
from gateway.daemon import Parts
from sim.devsim import SimLink
from gateway.links.base import Link
from gateway.registry import Registry, RegistryWriter
from gateway.uplink import Uplink
from protocol import codec, cose, messages
from protocol.cpython import loads


def outbox_topics(cfg):
    db = sqlite3.connect(cfg.outbox_path)
    try:
        return [r[0] for r in db.execute("SELECT topic FROM outbox ORDER BY id")]
    finally:
        db.close()


async def test_fill_without_temperature_keeps_the_link_and_is_stored(tmp_path):
    """The reproduction: temp null (temp_kind "none") raised TypeError in the waste loop and dropped the link."""
    link = await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}]))
    keys = provision(cfg, [("c001", "container_sensor")])
    async with running(cfg) as d:
        await connected(link)
        dev = link.add(sim("c001", keys, "container_sensor"))
        await dev.hello()
        connects = d.links[0].connects
        dev.send({"type": "fill", "fill": 97, "temp": None, "batt": 180})
        eid = await dev.event({"type": "alarm", "code": 1, "comp": 0, "value": 85})
        assert eid > 0
        await asyncio.sleep(0.3)  # a dropped link would reconnect within its 0.1 s backoff
        assert d.links[0].connects == connects and d.links[0].connected
        assert d.sessions.by_id["c001"].state["fill"]["fill"] == 97
    topics = outbox_topics(cfg)
    assert any(t.endswith("/c001/telemetry") for t in topics)
    assert any(t.endswith("/c001/event/alarm") for t in topics)
    await link.close()


async def test_control_senml_and_observer_errors_are_counted_logged_once_and_contained(tmp_path, monkeypatch, caplog):
    link = await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}]))
    keys = provision(cfg, [("c001", "container_sensor")])

    def broken_loop(self, s, msg, now):
        raise ZeroDivisionError("loop bug")

    def broken_builder(role, msg):
        raise KeyError("builder bug")

    monkeypatch.setattr(Waste, "on_message", broken_loop)
    monkeypatch.setattr("gateway.uplink.service.records_from_message", broken_builder)
    caplog.set_level(logging.ERROR, logger="park")
    async with running(cfg) as d:
        await connected(link)
        d.subscribe(lambda ev: 1 / 0)
        dev = link.add(sim("c001", keys, "container_sensor"))
        await dev.hello()
        for i in range(3):
            dev.send({"type": "fill", "fill": 10 + i, "temp": 12, "batt": 180})
            await dev.event({"type": "alarm", "code": 1, "comp": 0, "value": 85})
        await until(lambda: d.sessions.by_id["c001"].state["fill"]["fill"] == 12, what="fills")
        faults = d.status()["faults"]
        assert faults["control_ZeroDivisionError"] == 6  # 3 fills + 3 alarms
        assert faults["uplink_KeyError"] == 3
        assert faults["observer_ZeroDivisionError"] >= 6
        assert d.links[0].connects == 1
    logged = collections.Counter((r.name, r.getMessage().split(":")[0]) for r in caplog.records)
    assert all(n == 1 for n in logged.values()), logged
    topics = outbox_topics(cfg)
    assert sum(t.endswith("/c001/event/alarm") for t in topics) == 3
    await link.close()


# -- every uplink message type with legal values (park.cddl), through sessions + control + uplink

def _field(f):
    name, kind, lo, hi = f
    if kind in (messages.U, messages.I):
        return st.sampled_from((lo, hi, 0 if lo <= 0 <= hi else lo)) | st.integers(lo, hi)
    if kind == messages.N:
        return st.none() | st.sampled_from((lo, hi, 0 if lo <= 0 <= hi else lo)) | st.integers(lo, hi)
    if kind == messages.B:
        return st.booleans()
    if kind == messages.Y:
        return st.binary(min_size=lo, max_size=hi)
    if kind == messages.T:
        return st.text(max_size=hi // 4)
    raise AssertionError("no strategy for field kind %r" % kind)


_UP_TYPES = [v for v in messages.SCHEMAS.values() if v[1] == messages.UP and v[0] != "hello"]


def _message():
    return st.sampled_from(_UP_TYPES).flatmap(
        lambda sch: st.fixed_dictionaries({"type": st.just(sch[0]), **{f[0]: _field(f) for f in sch[2]}}))


class _Link(Link):
    """A real link's receive path (deframer, counters); what the gateway writes is kept."""

    def __init__(self, sink):
        super().__init__("prop", sink.on_envelope, sink.on_frame_error)
        self.frames = []

    def write(self, frame):
        self.frames.append(frame)


DEVICES = (("c001", "container_sensor"), ("l001", "light_pole"), ("k001", "locker"))


async def _drive(tmp, batch):
    cfg = load(write_config(tmp, [], edges=[("l001", "l002")]))
    keys = provision(cfg, DEVICES)
    registry, writer = Registry(cfg.registry_path), RegistryWriter(cfg.registry_path)
    try:
        async with Uplink(cfg.uplink, cfg.outbox_path) as uplink:
            parts = Parts(cfg, registry, writer, uplink)
            link = _Link(parts.sessions)
            seqs = collections.Counter()
            acked_types = {}
            for i, (dev_index, msg) in enumerate(batch):
                did, _ = DEVICES[dev_index]
                if "eid" in msg:
                    msg = dict(msg, eid=i + 1)
                seq = seqs[did]
                seqs[did] += 1
                if msg["type"] in messages.ACKED_UP:
                    acked_types[(did, seq)] = msg["type"]
                link.feed(codec.pack(cose.Mac(keys[did]), cose.UP, did.encode(), seq, msg))  # never raises
            await asyncio.sleep(0)
            acks = set()
            for _ in range(200):
                acks = set()
                for frame in link.frames:
                    r = codec.open_frame(frame, cose.DOWN, lambda k: cose.Mac(keys[k.decode()]), None, loads)
                    kid = r.kid.decode()
                    if r.msg["type"] == "ack":
                        acks.add((kid, r.msg["ref"]))
                if set(acked_types) <= acks:
                    break
                await asyncio.sleep(0.01)
            assert set(acked_types) <= acks, "events stored but not acked: %s" % (set(acked_types) - acks)
            faults = parts.sessions.faults.as_dict()
            assert not [k for k in faults if k.startswith(("session_", "observer_"))], faults
            assert uplink.stats().outbox_depth >= len(acked_types)
    finally:
        writer.close()
        registry.close()


@settings(max_examples=25, deadline=None)
@given(batch=st.lists(st.tuples(st.integers(0, len(DEVICES) - 1), _message()), min_size=1, max_size=30))
def test_every_message_type_with_legal_values_is_stored_acked_and_contained(tmp_path_factory, batch):
    asyncio.run(_drive(str(tmp_path_factory.mktemp("prop")), batch))


async def test_control_tick_errors_are_counted_and_logged_once(tmp_path, caplog):
    from gateway.config import parse
    from gateway.control import Control

    cfg = parse('[sites.stadtpark]\nlatitude = 52.5\nlongitude = 13.4\n', "t.toml", env={})
    ctl = Control(cfg, {}, lambda did, msg: None, lambda *a: None)

    def broken(now):
        raise RuntimeError("tick bug")

    ctl.lighting.tick = broken
    caplog.set_level(logging.ERROR, logger="park")
    task = asyncio.create_task(ctl.run(period=0.01))
    await until(lambda: ctl.faults.counts["control_tick_RuntimeError"] >= 3, what="ticks")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len([r for r in caplog.records if "tick bug" in r.getMessage()]) == 1
