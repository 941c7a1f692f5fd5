"""issue 13, overload: latency-class links (poles, lockers) read through a backpressure pause, within an allowance.

The class comes from the registry's role of the devices the sessions authenticated on a link
(here a sink that returns a kid per envelope prefix, and a role_of the test sets); a link with
no authenticated device, or with a bulk one, pauses. Behaviour, not timing: which link's frames
are delivered while the gateway's backlog is over its mark.
"""

import asyncio

from gwharness import connected, load, provision, running, sim, until, write_config
from test_links_priority import Peer

from protocol import framing
from gateway.links import Backpressure, TcpLink, TcpServerLink
from sim.devsim import SimLink
from sim.fakeble import BlePeer, FakeBleRadio, park_advertisement

ROLES = {b"l001": "light_pole", b"k001": "locker", b"c001": "container_sensor"}


def _frames(prefix, n, start=0):
    return b"".join(framing.encode_frame(prefix + b"-%06d" % i) for i in range(start, start + n))


class Sink:
    """Envelopes b"l001-..." are authentic frames of l001 (and so on); b"anon-..." are not authentic."""

    def __init__(self):
        self.envelopes = []

    def on_envelope(self, link, env):
        self.envelopes.append(env)
        kid = env.split(b"-")[0]
        return kid if kid in ROLES else None

    def on_frame_error(self, link, err):
        raise AssertionError(err)

    def of(self, prefix):
        return [e for e in self.envelopes if e.startswith(prefix + b"-")]


def _pressure(level, rate=None, burst=None):
    p = Backpressure(lambda: level[0], high=10, shed_at=10, low=2, poll_s=0.01)
    p.role_of = ROLES.get  # as the daemon sets it from its device table
    if rate is not None:
        p.rate, p.burst = rate, burst
    return p


async def _server(sink, p):
    srv = TcpServerLink("wifi", ("127.0.0.1", 0), sink.on_envelope, sink.on_frame_error)
    srv.pressure = p
    task = asyncio.create_task(srv.run())
    await until(lambda: srv.connected and srv.port, what="listening")
    return srv, task


async def _connect(srv, sink, prefix, n_before):
    """A device's connection that said one frame before the test goes on."""
    _, w = await asyncio.open_connection("127.0.0.1", srv.port)
    w.write(_frames(prefix, 1))
    await until(lambda: len(sink.of(prefix)) == n_before + 1, what="%s's first frame" % prefix.decode())
    return w


def _conn(srv, kid=None):
    return next(c for c in srv.conns if (kid in c.kids if kid else not c.kids))


async def _stop(link, task):
    link.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_pole_connection_reads_through_a_pause_and_a_bulk_one_does_not():
    sink, level = Sink(), [0]
    p = _pressure(level)
    srv, task = await _server(sink, p)
    try:
        pole = await _connect(srv, sink, b"l001", 0)
        locker = await _connect(srv, sink, b"k001", 0)
        bulk = await _connect(srv, sink, b"c001", 0)
        level[0] = 100
        bulk.write(_frames(b"c001", 1, 1))  # the read that notices the backlog
        await until(lambda: p.paused, what="paused")
        bulk.write(_frames(b"c001", 20, 2))
        pole.write(_frames(b"l001", 3, 1))
        locker.write(_frames(b"k001", 2, 1))
        await until(lambda: len(sink.of(b"l001")) == 4 and len(sink.of(b"k001")) == 3, what="pole and locker read")
        await asyncio.sleep(0.2)
        assert len(sink.of(b"c001")) == 2  # the bin's link waits in the kernel
        assert not _conn(srv, b"c001").transport.is_reading() and _conn(srv, b"l001").transport.is_reading()
        assert p.paused and p.info()["reading_through"] == 2 and p.read_through == 5 and p.over_allowance == 0
        level[0] = 0
        await until(lambda: len(sink.of(b"c001")) == 22, what="the bin's frames after the pause")
        assert sink.of(b"c001") == [b"c001-%06d" % i for i in range(22)]  # none lost
        for w in (pole, locker, bulk):
            w.close()
    finally:
        await _stop(srv, task)


async def test_a_pole_past_its_allowance_pauses_like_a_bulk_link():
    sink, level = Sink(), [0]
    p = _pressure(level, rate=0.001, burst=5)  # 5 frames, (almost) no refill
    srv, task = await _server(sink, p)
    try:
        pole = await _connect(srv, sink, b"l001", 0)
        level[0] = 100
        assert not p.check() and p.paused
        pole.write(_frames(b"l001", 3, 1))
        await until(lambda: len(sink.of(b"l001")) == 4, what="within the allowance")
        assert p.over_allowance == 0 and _conn(srv, b"l001").transport.is_reading()
        pole.write(_frames(b"l001", 4, 4))  # a flooding pole: 7 frames in the pause, past 5
        await until(lambda: p.over_allowance == 1, what="allowance spent")
        got = len(sink.of(b"l001"))
        pole.write(_frames(b"l001", 30, 8))
        await asyncio.sleep(0.2)
        assert len(sink.of(b"l001")) == got and not _conn(srv, b"l001").transport.is_reading()
        assert p.info()["reading_through"] == 0
        level[0] = 0
        await until(lambda: len(sink.of(b"l001")) == 38, what="read after the pause")
        assert sink.of(b"l001") == [b"l001-%06d" % i for i in range(38)]
        pole.close()
    finally:
        await _stop(srv, task)


async def test_connections_of_unknown_devices_pause_while_a_poles_reads_on():
    """Nothing a device says makes its link latency class: only frames the sessions authenticated."""
    sink, level = Sink(), [0]
    p = _pressure(level)
    srv, task = await _server(sink, p)
    try:
        pole = await _connect(srv, sink, b"l001", 0)
        anon = await _connect(srv, sink, b"anon", 0)  # sent frames, none authentic (a forged pole's, say)
        level[0] = 100
        assert not p.check() and p.paused
        _, late = await asyncio.open_connection("127.0.0.1", srv.port)  # connects during the pause
        await until(lambda: len(srv.conns) == 3, what="third connection")
        late.write(_frames(b"l001", 1, 100))  # would be a pole's frame: not read before it is authenticated
        anon.write(_frames(b"anon", 5, 1))
        pole.write(_frames(b"l001", 2, 1))
        await until(lambda: len(sink.of(b"l001")) == 3, what="the pole read on")
        await asyncio.sleep(0.2)
        assert len(sink.of(b"anon")) == 1 and len(sink.of(b"l001")) == 3
        assert sum(c.transport.is_reading() for c in srv.conns) == 1
        level[0] = 0
        await until(lambda: len(sink.of(b"anon")) == 6 and len(sink.of(b"l001")) == 4, what="after the pause")
        for w in (pole, anon, late):
            w.close()
    finally:
        await _stop(srv, task)


async def test_a_stream_of_poles_reads_through_and_a_stream_with_a_bin_on_it_does_not():
    """TcpLink (one stream, many devices, as the benchmark's pole link): every device on it must be a pole or
    a locker; one bin makes it bulk, also one that first authenticates during the pause."""
    sink, level = Sink(), [0]
    p = _pressure(level)
    peers = [Peer(), Peer()]
    links = [TcpLink(name, await peer.start(), sink.on_envelope, sink.on_frame_error)
             for name, peer in zip(("poles", "mixed"), peers)]
    tasks = []
    for lk in links:
        lk.pressure = p
        tasks.append(asyncio.create_task(lk.run()))
    try:
        poles_w, mixed_w = [await asyncio.wait_for(peer.writer, 5) for peer in peers]
        poles_w.write(_frames(b"l001", 1) + _frames(b"k001", 1))
        mixed_w.write(_frames(b"l001", 1, 50) + _frames(b"c001", 1))
        await until(lambda: len(sink.envelopes) == 4, what="first frames")
        level[0] = 100
        assert not p.check() and p.paused
        poles_w.write(_frames(b"l001", 3, 1))
        mixed_w.write(_frames(b"l001", 3, 51))
        await until(lambda: len(sink.of(b"l001")) == 5, what="the poles' stream read on")
        await asyncio.sleep(0.2)
        assert sorted(sink.of(b"l001"))[-1] == b"l001-000050"  # the mixed stream's second: not read
        assert links[0].kids == {b"l001", b"k001"} and p.info()["reading_through"] == 1
        poles_w.write(_frames(b"c001", 1, 10))  # a bin turns up on the poles' stream
        await until(lambda: len(sink.of(b"c001")) == 2, what="the bin's frame")
        poles_w.write(_frames(b"l001", 2, 4))
        await asyncio.sleep(0.2)
        assert len(sink.of(b"l001")) == 5 and p.info()["reading_through"] == 0  # paused from then on
        level[0] = 0
        await until(lambda: len(sink.of(b"l001")) == 10, what="everything after the pause")
    finally:
        for lk, t in zip(links, tasks):
            await _stop(lk, t)
        for peer in peers:
            peer.server.close()


async def test_the_daemon_prelights_through_a_pause_on_the_poles_link_and_leaves_the_bins_unread(tmp_path):
    """The daemon wires the registry's roles in: the poles' own link reads on, the bin's link waits."""
    bins_link, poles_link = await SimLink.tcp_server(), await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": bins_link.url, "name": "bins"},
                                            {"type": "tcp", "url": poles_link.url, "name": "poles"}],
                            edges=[("l001", "l002")]))
    keys = provision(cfg, [("l001", "light_pole"), ("l002", "light_pole"), ("c001", "container_sensor")])
    poles = [poles_link.add(sim(d, keys, "light_pole")) for d in ("l001", "l002")]
    bin_ = bins_link.add(sim("c001", keys, "container_sensor"))
    async with running(cfg) as d:
        await connected(bins_link)
        await connected(poles_link)
        for dev in poles + [bin_]:
            await dev.hello()
        p = d.pressure
        level = [p.high + 1]
        p.level = lambda: level[0]
        bin_.send({"type": "fill", "fill": 10, "temp": 5, "batt": 200})  # the read that notices the backlog
        await until(lambda: p.paused, what="paused")
        bin_.send({"type": "fill", "fill": 11, "temp": 5, "batt": 200})
        await asyncio.wait_for(poles[0].event({"type": "motion", "count": 1}), 5)  # read, stored, acked
        await until(lambda: any(c["type"] == "prelight" for c in poles[1].commands), what="prelight to l002")
        assert p.paused and d.sessions.by_id["c001"].state["fill"]["fill"] == 10  # the bin's second: unread
        assert d.status()["backpressure"]["read_through"] >= 1
        level[0] = 0
        await until(lambda: d.sessions.by_id["c001"].state["fill"]["fill"] == 11, what="the bin after the pause")
    await bins_link.close()
    await poles_link.close()


async def test_ble_pool_connects_a_pole_through_a_pause_and_a_bin_keeps_its_place(tmp_path):
    from test_links_radio import pool_cfg

    cfg = pool_cfg(tmp_path)
    keys = provision(cfg, [("l001", "light_pole"), ("c001", "container_sensor")])
    radio = FakeBleRadio(max_connections=5, interval_ms=10, adv_interval_ms=20)
    pole = BlePeer(sim("l001", keys, "light_pole"), "AA:00:00:00:00:01")
    bin_ = BlePeer(sim("c001", keys, "container_sensor"), "AA:00:00:00:00:02")
    radio.add(pole.periph)
    radio.add(bin_.periph)
    async with running(cfg, ble_factory=radio) as d:
        pool = d.links[0]
        p = d.pressure
        level = [p.high + 1]
        p.level = lambda: level[0]
        assert not p.check() and p.paused
        bin_wake = asyncio.ensure_future(bin_.wake({"type": "fill", "fill": 40, "temp": 12, "batt": 180}))
        await until(lambda: "c001" in pool._wanted, what="the bin wants a connection")
        await pole.wake({"type": "light", "level": 1, "state": 0, "ambient": 0, "lamp_ma": 0})
        assert "light" in d.sessions.by_id["l001"].state and pool.counters["backpressure_read_through"] == 1
        assert not bin_wake.done() and "fill" not in d.sessions.by_id["c001"].state
        assert list(pool._wanted) == ["c001"] and pool.counters["backpressure_waits"] >= 1
        level[0] = 0
        await asyncio.wait_for(bin_wake, 10)
        assert d.sessions.by_id["c001"].state["fill"]["fill"] == 40


async def test_ble_pole_past_its_allowance_is_disconnected_and_not_connected_again_in_that_pause(tmp_path):
    from test_links_radio import pool_cfg

    cfg = pool_cfg(tmp_path, idle_s=5)  # held while the test talks, not ended as served
    keys = provision(cfg, [("l001", "light_pole")])
    radio = FakeBleRadio(max_connections=5, interval_ms=10, adv_interval_ms=20)
    pole = BlePeer(sim("l001", keys, "light_pole"), "AA:00:00:00:00:01")
    radio.add(pole.periph)
    async with running(cfg, ble_factory=radio) as d:
        pool = d.links[0]
        p = d.pressure
        p.rate, p.burst = 0.001, 2  # two frames, (almost) no refill
        level = [p.high + 1]
        p.level = lambda: level[0]
        assert not p.check() and p.paused
        pole.periph.advertisement = park_advertisement("l001", True)
        await until(lambda: radio.connects == 1, what="connected through the pause")
        await pole.dev.hello()
        for i in range(5):
            pole.dev.send({"type": "light", "level": i, "state": 0, "ambient": 0, "lamp_ma": 0})
        await until(lambda: pool.counters["over_allowance"] == 1, what="disconnected past its allowance")
        await asyncio.sleep(0.3)  # it still advertises "data waiting"
        assert radio.connects == 1 and "l001" in pool._wanted
        level[0] = 0
        await until(lambda: radio.connects == 2, what="connected again after the pause")
