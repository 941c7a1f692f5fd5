"""BLE links through bleak: frames chunked over a GATT characteristic pair.

BlePool (no `address` in the config): a scanner plus a bounded connection pool that
serves a park's battery devices on demand. BleLink (`address`): one device kept
connected, for a bench or a device with mains power next to the gateway.

The device offers the park link service (protocol/SPEC.md section 2): the gateway writes frames to the
RX characteristic (write without response) in chunks of MTU-3 bytes and gets
the device's bytes as notifications on TX. The frame delimiter makes the
stream self-synchronising, so chunk boundaries need no header. Lost
connections are retried with backoff; the radio's own quirks (a connection
that reports connected but never notifies) are caught by the session's
liveness check, not here.
"""

from __future__ import annotations

import asyncio
import collections

from protocol import rules
from protocol.cpython import Deframer  # the host deframer: whole frames split out in C

from gateway.links.base import Link, log

SERVICE = "7061726b-0001-4c69-6e6b-000000000001"  # SPEC.md section 2: "park" "Link"
RX_CHAR = "7061726b-0001-4c69-6e6b-000000000002"  # gateway -> device (write without response)
TX_CHAR = "7061726b-0001-4c69-6e6b-000000000003"  # device -> gateway (notify)
DEFAULT_MTU = 23


def chunks(frame: bytes, mtu: int):
    n = max(1, mtu - 3)
    for i in range(0, len(frame), n):
        yield frame[i:i + n]


def _bleak_client(address, disconnected_callback):
    from bleak import BleakClient

    return BleakClient(address, disconnected_callback=disconnected_callback)


class BleLink(Link):
    kind = "ble"

    def __init__(self, name, address, on_envelope, on_error, reconnect_max=30.0, client_factory=None):
        super().__init__(name, on_envelope, on_error, reconnect_max)
        self.address = address
        self._factory = client_factory or _bleak_client
        self._q: asyncio.Queue | None = None
        self._client = None
        self.mtu = DEFAULT_MTU

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        lost = loop.create_future()

        def gone(_client=None):
            loop.call_soon_threadsafe(lambda: lost.done() or lost.set_exception(ConnectionError("BLE disconnected")))

        client = self._factory(self.address, gone)
        await asyncio.wait_for(client.connect(), 20)
        try:
            self.mtu = getattr(client, "mtu_size", DEFAULT_MTU) or DEFAULT_MTU
            await client.start_notify(TX_CHAR, lambda _ch, data: self.feed(bytes(data)))
            await client.write_gatt_char(RX_CHAR, READY, response=False)  # SPEC 2: subscribed, send
            self._q = asyncio.Queue(maxsize=256)
            self._client = client
            self._up()
            writer = asyncio.create_task(self._writer(client, lost))
            try:
                await lost
            finally:
                writer.cancel()
        finally:
            self._client = None
            self._q = None
            try:
                await asyncio.wait_for(client.disconnect(), 5)
            except Exception:  # noqa: BLE001 - already gone
                pass

    async def _writer(self, client, lost) -> None:
        q = self._q
        try:
            while True:
                frame = await q.get()
                for part in chunks(frame, self.mtu):
                    await client.write_gatt_char(RX_CHAR, part, response=False)
                self.counters["tx_frames"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a failed write ends this connection
            if not lost.done():
                lost.set_exception(e)

    def write(self, frame: bytes) -> None:
        q = self._q
        if q is None:
            self.counters["tx_dropped"] += 1
            return
        try:
            q.put_nowait(frame)
        except asyncio.QueueFull:
            self.counters["tx_dropped"] += 1

    def info(self) -> dict:
        d = super().info()
        d.update(address=self.address, mtu=self.mtu)
        return d


# ---------------------------------------------------------------- scanner + connection pool

WAITING = 0x01  # advertisement flag bit: the device has data waiting
COMPANY = 0xFFFF  # manufacturer data of a park advertisement (SPEC 2)
ADV_VERSION = 0x50  # "P": park link version 1
READY = b"\x00"  # the gateway's first write on a connection (an empty frame): the device may notify


def parse_advert(adv) -> tuple[str, bool] | None:
    """(device id, data waiting) from a bleak AdvertisementData, or None if it is not a park device.

    The one place the advertising format (protocol/SPEC.md section 2) is read:
    manufacturer data of company 0xFFFF: 0x50, a flag byte (bit 0 "data waiting"),
    then the device id.
    """
    data = adv.manufacturer_data.get(COMPANY)
    if data is None or len(data) < 3 or data[0] != ADV_VERSION:
        return None
    name = bytes(data[2:]).decode("ascii", "replace")
    if not rules.valid_id(name):
        return None
    return name, bool(data[1] & WAITING)


def _bleak():
    import bleak

    return bleak


class BlePort:
    """One device's end of the pool: the link its sessions write to, queued until it is connected."""

    def __init__(self, pool: "BlePool", device_id: str):
        self.pool = pool
        self.id = device_id
        self.name = "%s/%s" % (pool.name, device_id)
        self.counters = pool.counters
        self.deframer = Deframer()
        self.out: collections.deque = collections.deque()
        self.ready = asyncio.Event()  # frames waiting in `out` for the writer
        self.client = None
        self.device = None  # the BLEDevice of the last advertisement
        self.seen = 0.0  # loop time of the last advertisement
        self.last_io = 0.0
        self.mtu = DEFAULT_MTU
        self.kids: set[bytes] = set()  # what the sessions authenticated on this connection
        self.spent = 0  # the backpressure pause (its number) in which it read past its allowance

    @property
    def reachable(self) -> bool:
        return self.client is not None

    def pause_reading(self) -> None:
        """Backpressure: a pole or locker connected through a pause read past its allowance (or is not one):
        its connection ends, and it waits for the pause's end like the others."""
        self.spent = self.pool.pressure.pauses
        self.ready.set()

    def resume_reading(self) -> None:
        pass

    def write(self, frame: bytes) -> None:
        if len(self.out) >= self.pool.queue:
            self.out.popleft()
            self.counters["tx_dropped"] += 1  # the oldest frame goes: it is the most likely to be stale
        self.out.append(frame)
        self.ready.set()
        if self.client is None:
            self.counters["tx_queued"] += 1

    def feed(self, data: bytes) -> None:
        pool = self.pool
        pool.counters["rx_bytes"] += len(data)
        self.last_io = asyncio.get_running_loop().time()
        n = 0
        for env, err in self.deframer.feed(data):
            n += 1
            if err is not None:
                pool._on_error(self, err)
                continue
            pool.counters["rx_frames"] += 1
            kid = pool._on_envelope(self, env)
            if kid:
                self.kids.add(kid)
            else:
                pool.counters["stranger_frames"] += 1
        if pool.pressure is not None:
            pool.pressure.check(self, n, len(data))  # a connection from before the pause reads on, as it did


class BlePool(Link):
    """A scanner plus a bounded connection pool (docs/gateway.md, "ble: scanner plus connection pool").

    Devices are not kept connected. A known device whose advertisement says
    "data waiting", or for which commands wait in the gateway, is connected when a
    slot is free (at most `max_connections`), served (its uplink drained, queued
    downlink written) and disconnected once quiet for `idle_s` with nothing left
    for it (at most `hold_s`), which frees the slot. Advertisements of unregistered
    park devices and of anything else are ignored and counted. When the controller
    refuses a connection below `max_connections` (BlueZ's le-connection-abort-by-local)
    the pool holds fewer (`limit`) and probes upwards again one slot per device served.
    `backend` is the bleak module (the default) or anything with its BleakScanner and
    BleakClient (sim.fakeble.FakeBleRadio in tests).
    """

    kind = "ble-pool"

    def __init__(self, name, on_envelope, on_error, devices, *, backend=None, max_connections=5, queue=16,
                 idle_s=0.5, hold_s=15.0, advert_ttl=5.0, connect_timeout=10.0, adapter="", reconnect_max=30.0):
        super().__init__(name, on_envelope, on_error, reconnect_max)
        self.devices = devices
        self._backend = backend
        self.max_connections = max_connections
        self.queue = queue
        self.idle_s = idle_s
        self.hold_s = hold_s
        self.advert_ttl = advert_ttl
        self.connect_timeout = connect_timeout
        self.adapter = adapter
        self.ports: dict[str, BlePort] = {}
        self.active: dict[str, asyncio.Task] = {}
        self._wanted: dict[str, None] = {}  # device ids to connect, oldest first
        self._wake: asyncio.Event | None = None
        self.limit = max_connections  # lowered when the controller refuses below max_connections
        self.serve_times: collections.deque = collections.deque(maxlen=1000)  # (advert->connected, connected s)

    # -- what the pool wants

    def _has_downlink(self, did: str) -> bool:
        """Commands wait for the device in the gateway (frames queued in its port alone do not call for a
        connection: after a bin's wake they are stale, its new session refuses them)."""
        s = self.devices.get(did)
        return s is not None and bool(s.queue or s.inflight)

    def _seen(self, device, adv) -> None:
        """bleak's detection callback: one advertisement."""
        self.counters["adverts"] += 1
        p = parse_advert(adv)
        if p is None:
            self.counters["adverts_foreign"] += 1
            return
        did, waiting = p
        if did not in self.devices:
            self.counters["adverts_unknown"] += 1
            return
        port = self.ports.get(did)
        if port is None:
            port = self.ports[did] = BlePort(self, did)
        port.device = device
        port.seen = asyncio.get_running_loop().time()
        if did in self.active or did in self._wanted:
            return
        if (waiting or self._has_downlink(did)) and self._wake is not None:
            self._wanted[did] = None
            self._wake.set()

    # -- running

    async def _session(self) -> None:
        backend = self._backend or _bleak()
        self._wake = wake = asyncio.Event()
        kw = {"bluez": {"adapter": self.adapter}} if self.adapter else {}
        scanner = backend.BleakScanner(detection_callback=self._seen, **kw)
        await scanner.start()
        self._up()
        if self.pressure is not None:
            self.pressure.attach(self)  # its resume_reading wakes the connector for the devices it held
        try:
            await self._connector(backend, wake)
        finally:
            if self.pressure is not None:
                self.pressure.detach(self)
            for t in list(self.active.values()):
                t.cancel()
            await asyncio.gather(*self.active.values(), return_exceptions=True)
            self._wanted.clear()
            try:
                await asyncio.wait_for(scanner.stop(), 5)
            except Exception:  # noqa: BLE001 - the adapter is gone already
                pass

    async def _connector(self, backend, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            p = self.pressure
            paused = p is not None and p.paused
            now = asyncio.get_running_loop().time()
            held = 0
            for did in list(self._wanted):  # oldest first
                if len(self.active) >= self.limit:
                    break
                port = self.ports[did]
                if paused and not self._reads_through(p, did, port):
                    held += 1  # it keeps its place until the pause ends (resume_reading wakes this loop)
                    continue
                del self._wanted[did]
                if now - port.seen > self.advert_ttl:
                    self.counters["advert_expired"] += 1  # it went back to sleep before a slot was free
                    continue
                if paused:
                    p.open_lane(port)
                    self.counters["backpressure_read_through"] += 1
                self.active[did] = asyncio.create_task(self._serve(backend, port, port.seen),
                                                       name="ble-%s" % did)
            if held:
                self.counters["backpressure_waits"] += 1

    def _reads_through(self, p, did: str, port: BlePort) -> bool:
        """During a pause only a pole or locker (the registry's role of the id it advertises) is connected, and
        not again once it read past its allowance in this pause."""
        s = self.devices.get(did)
        return s is not None and p.latency_role(s.role) and port.spent != p.pauses

    def pause_reading(self) -> None:
        """Backpressure: the connector holds every other device's place (see _connector)."""

    def resume_reading(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _serve(self, backend, port: BlePort, advert_at: float) -> None:
        loop = asyncio.get_running_loop()
        lost = loop.create_future()

        def gone(_client=None):
            loop.call_soon_threadsafe(lambda: lost.done() or lost.set_result("disconnected by the device"))

        client = None
        try:
            kw = {"bluez": {"adapter": self.adapter}} if self.adapter else {}
            client = backend.BleakClient(port.device, disconnected_callback=gone, **kw)
            await asyncio.wait_for(client.connect(), self.connect_timeout)
            t0 = loop.time()
            acquire = getattr(getattr(client, "_backend", None), "_acquire_mtu", None)
            if acquire is not None:  # BlueZ reports 23 until asked (bleak's documented workaround)
                await acquire()
            port.mtu = getattr(client, "mtu_size", DEFAULT_MTU) or DEFAULT_MTU
            port.deframer.reset()
            port.kids.clear()
            await client.start_notify(TX_CHAR, lambda _ch, data: port.feed(bytes(data)))
            try:
                await client.write_gatt_char(RX_CHAR, READY, response=False)  # SPEC 2: subscribed, send
            except Exception:  # noqa: BLE001 - lost meanwhile: the exchange below counts it
                if getattr(client, "is_connected", True):
                    raise
            port.client = client
            port.last_io = loop.time()
            self.counters["connects"] += 1
            self.connects += 1
            why = await self._exchange(client, port, lost, t0)
            self.serve_times.append((t0 - advert_at, loop.time() - t0))
            self.counters["served"] += 1
            if self.limit < self.max_connections:
                self.limit += 1  # probe upwards again, one slot per device served
            log.debug("ble %s: %s served in %.3f s (%s)", self.name, port.id, loop.time() - t0, why)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - out of range, refused by the controller: next advertisement
            self.counters["connect_failed"] += 1
            self.last_error = "%s: %s: %s" % (port.id, type(e).__name__, e)
            log.debug("ble %s: %s", self.name, self.last_error)
            if port.client is None and "abort-by-local" in str(e) and len(self.active) > 1:
                self.limit = len(self.active) - 1  # the controller is full at what we hold now
                self.counters["limit_lowered"] += 1
                log.info("ble %s: controller refused connection %d; holding at most %d", self.name,
                         len(self.active), self.limit)
        finally:
            port.client = None
            self.active.pop(port.id, None)
            if client is not None and getattr(client, "is_connected", False):
                try:
                    await asyncio.wait_for(client.disconnect(), 5)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            if self._wake is not None:
                self._wake.set()  # a slot is free

    async def _exchange(self, client, port: BlePort, lost: asyncio.Future, t0: float) -> str:
        """Write what is queued, read what comes; returns why the connection ends."""
        loop = asyncio.get_running_loop()
        p = self.pressure
        while not lost.done():
            while port.out:
                frame = port.out.popleft()
                for part in chunks(frame, port.mtu):
                    await client.write_gatt_char(RX_CHAR, part, response=False)
                self.counters["tx_frames"] += 1
                port.last_io = loop.time()
            port.ready.clear()
            if p is not None and p.paused and port.spent == p.pauses:  # after the clear: pause_reading sets it
                self.counters["over_allowance"] += 1
                return "past its allowance in a backpressure pause"
            now = loop.time()
            if now - t0 >= self.hold_s:
                self.counters["hold_expired"] += 1
                return "held %.1f s" % self.hold_s
            quiet = now - port.last_io
            if quiet >= self.idle_s and not self._has_downlink(port.id):
                return "served"
            wait = min(max(self.idle_s - quiet, 0.01), t0 + self.hold_s - now)
            ready = asyncio.ensure_future(port.ready.wait())
            await asyncio.wait((ready, lost), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
        self.counters["lost"] += 1
        return lost.result()

    def write(self, frame: bytes) -> None:
        """Downlink goes out through the device's BlePort; a frame addressed to the pool itself is dropped."""
        self.counters["tx_dropped"] += 1

    def info(self) -> dict:
        d = super().info()
        d.update(max_connections=self.max_connections, limit=self.limit, active=sorted(self.active),
                 waiting=len(self._wanted), known=len(self.ports))
        return d
