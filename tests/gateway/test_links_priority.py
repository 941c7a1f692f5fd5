"""issue 13, overload: a flooded TCP stream costs another link at most one slice of work.

The bulk link (one stream carrying many devices) serves what it read a slice at a time, the
next slice only after the loop has polled again; a pole link's frame that arrives meanwhile is
served in its own I/O callback, before the flood's next slice. The order of deliveries is the
assertion (no timing): before, the pole's frame waited for at least two more slices.
"""

import asyncio

from gwharness import until

from protocol import framing
from gateway.links import Backpressure, TcpLink
from gateway.links import tcp as tcp_mod

FRAME = len(framing.encode_frame(b"bulk-%06d" % 0))


def _frames(prefix, n, start=0):
    return b"".join(framing.encode_frame(prefix + b"-%06d" % i) for i in range(start, start + n))


class Peer:
    """A device-side TCP server the link connects to."""

    async def start(self):
        self.writer = asyncio.get_running_loop().create_future()
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return "tcp://127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]

    async def _accept(self, r, w):
        self.writer.set_result(w)
        await r.read()  # hold the connection

    def close(self):
        self.server.close()


async def _run(*links):
    return [asyncio.create_task(lk.run()) for lk in links]


async def _stop(links, tasks):
    for lk in links:
        lk.stop()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_pole_frame_is_served_before_the_flooded_links_next_slice():
    order = []
    bulk_peer, pole_peer = Peer(), Peer()
    bulk_url, pole_url = await bulk_peer.start(), await pole_peer.start()
    pole_w = None

    def on_envelope(link, env):
        order.append(env)
        if env == b"bulk-000000":
            pole_w.write(framing.encode_frame(b"motion"))  # arrives while the flood's first slice is served
        return b"k"

    def on_error(link, err):
        raise AssertionError(err)

    bulk = TcpLink("bulk", bulk_url, on_envelope, on_error)
    pole = TcpLink("poles", pole_url, on_envelope, on_error)
    tasks = await _run(bulk, pole)
    try:
        bulk_w = await asyncio.wait_for(bulk_peer.writer, 5)
        pole_w = await asyncio.wait_for(pole_peer.writer, 5)
        await until(lambda: bulk.connected and pole.connected, what="both links up")
        n = 64 * 1024 // FRAME  # ~30 slices of work, sent at once
        bulk_w.write(_frames(b"bulk", n))
        await until(lambda: len(order) == n + 1, what="everything served")
        before = order.index(b"motion")
        per_slice = tcp_mod.READ_SIZE // FRAME + 1
        assert 0 < before <= per_slice, "the pole's frame waited for %d bulk frames (a slice is %d)" % (
            before, per_slice)
        assert [e for e in order if e != b"motion"] == [b"bulk-%06d" % i for i in range(n)]  # in order, none lost
        assert bulk.backlog == 0
    finally:
        await _stop((bulk, pole), tasks)
        bulk_peer.close()
        pole_peer.close()


async def test_the_flood_is_read_no_faster_than_it_is_served():
    """While a backlog is being served the transport does not read: the kernel holds the rest."""
    seen = []
    peer = Peer()
    url = await peer.start()
    link = TcpLink("bulk", url, lambda lk, env: seen.append(env) or b"k", lambda lk, err: None)
    tasks = await _run(link)
    try:
        w = await asyncio.wait_for(peer.writer, 5)
        await until(lambda: link.connected, what="link up")
        reading_between = []  # the transport's state at every slice after a read's first
        serve, received = link._serve, link._received
        in_read = [False]

        def traced_serve():
            if not in_read[0]:
                reading_between.append(link._transport.is_reading())
            serve()

        def traced_received(data):
            in_read[0] = True
            received(data)
            in_read[0] = False

        link._serve, link._received = traced_serve, traced_received
        n = 64 * 1024 // FRAME
        w.write(_frames(b"bulk", n))
        await until(lambda: len(seen) == n, what="served")
        assert len(reading_between) > 2 and not any(reading_between)
        assert link._transport.is_reading()  # reading again once the backlog is served
    finally:
        await _stop((link,), tasks)
        peer.close()


async def test_what_the_peer_sent_before_closing_is_served():
    seen = []
    peer = Peer()
    url = await peer.start()
    link = TcpLink("bulk", url, lambda lk, env: seen.append(env) or b"k", lambda lk, err: None)
    tasks = await _run(link)
    try:
        w = await asyncio.wait_for(peer.writer, 5)
        await until(lambda: link.connected, what="link up")
        n = 64 * 1024 // FRAME
        w.write(_frames(b"bulk", n))
        w.close()
        await until(lambda: len(seen) == n, what="served after the close")
        assert seen == [b"bulk-%06d" % i for i in range(n)]
    finally:
        await _stop((link,), tasks)
        peer.close()


async def test_a_paused_link_serves_no_slice_until_resumed():
    seen = []
    level = [0]
    peer = Peer()
    url = await peer.start()
    link = TcpLink("bulk", url, lambda lk, env: seen.append(env) or b"k", lambda lk, err: None)
    link.pressure = p = Backpressure(lambda: level[0], high=10, shed_at=10, low=2, poll_s=0.01)
    tasks = await _run(link)
    try:
        w = await asyncio.wait_for(peer.writer, 5)
        await until(lambda: link.connected, what="link up")
        level[0] = 100  # over the mark: the first slice's check pauses the link
        n = 16 * 1024 // FRAME
        w.write(_frames(b"bulk", n))
        await until(lambda: p.paused, what="paused")
        await asyncio.sleep(0.2)
        assert 0 < len(seen) <= tcp_mod.READ_SIZE // FRAME + 1 and link.backlog > 0
        level[0] = 0
        await until(lambda: len(seen) == n, what="resumed")
        assert seen == [b"bulk-%06d" % i for i in range(n)]
    finally:
        await _stop((link,), tasks)
        peer.close()
