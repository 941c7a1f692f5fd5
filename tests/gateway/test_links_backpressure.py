"""issue 13 item 1: ingress backpressure. The mechanism, not timings: bulk links stop reading above the
high-water mark and read again below the low one (nothing they did not read is lost: it waits in
the kernel), telemetry for the backbone is coalesced to the newest per device while shedding,
events are acked only once durable and never shed, and pre-lights are still sent while shedding.
Links of poles and lockers read through a pause within an allowance: test_links_readthrough.py.

The gateway's backlog is stood in for by a number the test sets (the real one is
Uplink.backlog(): messages not yet committed, or waiting in memory for a connected broker).
"""

import asyncio
import os

import pytest
from gwharness import connected, load, provision, running, sim, until, write_config

from protocol import framing
from gateway.daemon import Out
from gateway.events import EventBus
from gateway.links import Backpressure, TcpLink, TcpServerLink
from gateway.links.serial import SerialLink
from sim.devsim import SimLink


def _frames(n, start=0):
    return b"".join(framing.encode_frame(b"envelope-%06d" % i) for i in range(start, start + n))


class Sink:
    def __init__(self):
        self.envelopes = []

    def on_envelope(self, link, env):
        self.envelopes.append(env)
        return b"k%d" % id(link)  # every connection "authentic": bound to a device

    def on_frame_error(self, link, err):
        raise AssertionError(err)


def _pressure(level):
    return Backpressure(lambda: level[0], high=10, shed_at=5, low=2, poll_s=0.01)


async def test_tcp_server_stops_reading_above_the_mark_and_resumes_below_it():
    sink = Sink()
    level = [0]
    srv = TcpServerLink("wifi", ("127.0.0.1", 0), sink.on_envelope, sink.on_frame_error)
    srv.pressure = p = _pressure(level)
    p.role_of = lambda kid: "container_sensor"  # bulk devices: a pole's or a locker's link would read on
    task = asyncio.create_task(srv.run())
    try:
        await until(lambda: srv.connected and srv.port, what="listening")
        _, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(_frames(5))
        await until(lambda: len(sink.envelopes) == 5, what="first frames")
        level[0] = 100  # the gateway fell behind: the next read notices
        w.write(_frames(1, 5))
        await until(lambda: p.paused, what="paused")
        assert len(sink.envelopes) == 6
        conn = next(iter(srv.conns))
        assert not conn.transport.is_reading()
        w.write(_frames(20, 6))
        _, w2 = await asyncio.open_connection("127.0.0.1", srv.port)  # a device connecting meanwhile
        w2.write(_frames(3, 26))
        await until(lambda: len(srv.conns) == 2, what="second connection")
        await asyncio.sleep(0.3)
        assert len(sink.envelopes) == 6  # unread: in the kernel's buffers, the window pushes back
        assert all(not c.transport.is_reading() for c in srv.conns)  # every bulk (or new) connection stops
        assert p.info()["reading_through"] == 0
        level[0] = 3  # below high but above low: still paused (hysteresis)
        await asyncio.sleep(0.1)
        assert p.paused and len(sink.envelopes) == 6
        level[0] = 1
        await until(lambda: len(sink.envelopes) == 29, what="everything read after resuming")
        assert not p.paused and p.pauses == 1 and p.info()["paused_s"] > 0.3
        assert sorted(sink.envelopes) == [b"envelope-%06d" % i for i in range(29)]  # none lost
        w.close()
        w2.close()
    finally:
        srv.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_tcp_client_link_stops_reading_and_resumes():
    sink = Sink()
    level = [0]
    peer = asyncio.get_running_loop().create_future()

    async def accept(r, w):
        peer.set_result(w)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = TcpLink("bench", "tcp://127.0.0.1:%d" % port, sink.on_envelope, sink.on_frame_error)
    link.pressure = p = _pressure(level)
    task = asyncio.create_task(link.run())
    try:
        w = await asyncio.wait_for(peer, 5)
        level[0] = 100
        w.write(_frames(1))
        await until(lambda: p.paused, what="paused")
        w.write(_frames(50, 1))
        await w.drain()
        await asyncio.sleep(0.3)
        assert len(sink.envelopes) == 1
        level[0] = 0
        await until(lambda: len(sink.envelopes) == 51, what="resumed")
        assert sorted(sink.envelopes) == [b"envelope-%06d" % i for i in range(51)]
    finally:
        link.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()


async def test_serial_link_leaves_bytes_in_the_tty_while_paused(tmp_path):
    sink = Sink()
    level = [0]
    sl = SimLink.pty()
    link = SerialLink("usb0", sl.slave_path, sink.on_envelope, sink.on_frame_error)
    link.pressure = p = _pressure(level)
    task = asyncio.create_task(link.run())
    try:
        await until(lambda: link.connected, what="serial open")
        level[0] = 100
        os.write(sl.master_fd, _frames(1))
        await until(lambda: p.paused, what="paused")
        os.write(sl.master_fd, _frames(10, 1))
        await asyncio.sleep(0.3)
        assert len(sink.envelopes) == 1
        level[0] = 0
        await until(lambda: len(sink.envelopes) == 11, what="resumed")
    finally:
        link.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sl.close()


def test_marks_must_be_ordered():
    with pytest.raises(ValueError, match="low <= shed_at <= high"):
        Backpressure(lambda: 0, high=10, shed_at=20, low=2)


class _Uplink:
    def __init__(self):
        self.telemetry, self.events = [], []

    def telemetry_nowait(self, site, device_id, role, msg, ts=None):
        self.telemetry.append((device_id, dict(msg)))
        f = asyncio.get_running_loop().create_future()
        f.set_result(None)
        return f

    def event_nowait(self, site, device_id, kind, body, event_id, ts):
        self.events.append(event_id)
        f = asyncio.get_running_loop().create_future()
        f.set_result(None)
        return f


class _Dev:
    def __init__(self, did):
        self.id, self.site, self.role = did, "stadtpark", "container_sensor"


async def test_shedding_keeps_the_newest_telemetry_per_device_and_every_event():
    level = [0]
    p = _pressure(level)
    up = _Uplink()
    out = Out(up, EventBus(), p)
    a, b = _Dev("c001"), _Dev("c002")
    level[0] = 6
    assert p.check() and p.shedding  # above shed_at, below high: reading goes on
    for i in range(5):
        out.telemetry(a, {"type": "fill", "fill": i, "temp": 1, "batt": 1}, 1.0)
        out.event(a, {"type": "fault", "eid": i, "t": 0, "code": 1, "value": i}, 1.0)
    out.telemetry(b, {"type": "fill", "fill": 50, "temp": 1, "batt": 1}, 1.0)
    assert up.telemetry == [] and len(up.events) == 5  # events never wait and are never shed
    assert out.shed == 4
    level[0] = 1
    await until(lambda: not p.shedding, what="relief")
    assert sorted(up.telemetry, key=lambda t: t[0]) == [("c001", {"type": "fill", "fill": 4, "temp": 1, "batt": 1}),
                                                       ("c002", {"type": "fill", "fill": 50, "temp": 1, "batt": 1})]
    out.telemetry(a, {"type": "fill", "fill": 9, "temp": 1, "batt": 1}, 2.0)
    assert up.telemetry[-1] == ("c001", {"type": "fill", "fill": 9, "temp": 1, "batt": 1})  # straight through again


async def test_the_daemon_under_pressure_acks_events_only_when_durable_and_still_prelights(tmp_path):
    link = await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "wifi"}],
                            edges=[("l001", "l002")]))
    keys = provision(cfg, [("l001", "light_pole"), ("l002", "light_pole"), ("c001", "container_sensor")])
    poles = [link.add(sim(d, keys, "light_pole")) for d in ("l001", "l002")]
    bin_ = link.add(sim("c001", keys, "container_sensor"))
    async with running(cfg) as d:
        await connected(link)
        for dev in poles + [bin_]:
            await dev.hello()
        p = d.pressure
        assert p is not None and p.level() >= 0  # the real level: the uplink's backlog
        level = [p.shed_at + 1]
        p.level = lambda: level[0]
        outbox = d.uplink.outbox
        base = outbox.depth
        bin_.send({"type": "fill", "fill": 10, "temp": 5, "batt": 200})  # the read that notices the pressure
        await until(lambda: p.shedding, what="shedding")
        for f in range(11, 21):
            bin_.send({"type": "fill", "fill": f, "temp": 5, "batt": 200})
        await poles[0].event({"type": "motion", "count": 1})  # acked: it is durable in the outbox
        await until(lambda: any(c["type"] == "prelight" for c in poles[1].commands), what="prelight to l002")
        await until(lambda: d.out.shed >= 9, what="telemetry coalesced")
        assert d.sessions.by_id["c001"].state["fill"]["fill"] == 20  # the loops saw every message

        level[0] = p.high + 1  # second stage: this link carries a bin too (bulk), so nothing is read
        poles[0].send({"type": "light", "level": 1, "state": 0, "ambient": 0, "lamp_ma": 0})
        await until(lambda: p.paused, what="paused")
        ack = poles[0].event_nowait({"type": "motion", "count": 2})
        await asyncio.sleep(0.3)
        assert not ack.done()  # not read, so not acked: the device would retransmit
        level[0] = 0
        await asyncio.wait_for(ack, 5)  # read after resuming, stored, then acked
        assert not p.paused
        await until(lambda: not p.shedding, what="shedding over (after a second on time)")

        for _ in range(50):  # what shedding held is released when it ends, then committed within the window
            rows = await outbox.in_writer(lambda db: [(t, bytes(pl)) for t, pl in
                                                      db.execute("SELECT topic, payload FROM outbox ORDER BY id")])
            fills = [pl for t, pl in rows if t.endswith("/c001/telemetry")]
            if fills and b'"v":20' in fills[-1]:
                break
            await asyncio.sleep(0.1)
        assert len([t for t, _ in rows if t.endswith("/event/motion")]) == 2  # both events, each stored once
        assert len(fills) < 5  # the shed reports never reached the outbox
        assert b'"v":20' in fills[-1]  # the newest did
    await link.close()


def test_session_config_sets_the_marks(tmp_path):
    from gateway.daemon import _pressure

    cfg = load(write_config(str(tmp_path), session="backpressure = 400\nshed_telemetry = false"))
    p = _pressure(cfg.session, lambda: 0)
    assert (p.high, p.shed_at, p.low) == (400, 400, 100)
    p.level = lambda: 300
    assert p.check() and not p.shedding  # shedding is off: only the links' pause remains
    assert _pressure(load(write_config(str(tmp_path), session="backpressure = 0")).session, lambda: 0) is None
    on = _pressure(load(write_config(str(tmp_path))).session, lambda: 0)
    assert (on.high, on.shed_at, on.low) == (8000, 4000, 2000)


async def test_a_late_loop_with_a_backlog_sheds_and_a_calm_one_stops():
    import time

    from gateway.links import pressure as pressure_mod

    level = [0]
    p = Backpressure(lambda: level[0], high=100, shed_at=50, low=10, poll_s=0.01, lag_s=0.02)
    released = []
    p.on_relief(lambda: released.append(1))
    p.start()
    try:
        await asyncio.sleep(0.12)
        time.sleep(0.15)  # the loop is late, but nothing is waiting: a hiccup, not overload
        await asyncio.sleep(0.12)
        assert p.lagging >= 1 and not p.shedding
        level[0] = 20  # a backlog above low, below shed_at
        time.sleep(0.15)
        await until(lambda: p.shedding, what="shedding from lateness")
        level[0] = 0
        await asyncio.sleep(0.2)
        assert p.shedding  # not before CALM_TICKS ticks on time
        await until(lambda: not p.shedding, timeout=pressure_mod.CALM_TICKS * pressure_mod.TICK_S * 4,
                    what="calm again")
        assert released == [1]
    finally:
        p.stop()


async def test_a_broker_that_falls_behind_sheds_telemetry_but_never_stops_the_links():
    """Rows the publisher is behind by, also those paged out to disk, call for shedding; only memory stops reading."""
    unsent = [0]
    p = Backpressure(lambda: 0, high=10, shed_at=5, low=2, poll_s=0.01, unsent=lambda: unsent[0])
    unsent[0] = 1000
    assert p.check() and p.shedding and not p.paused
    unsent[0] = 3
    await asyncio.sleep(0.1)
    assert p.shedding  # above low
    unsent[0] = 0
    await until(lambda: not p.shedding, what="relief")
    assert p.pauses == 0
