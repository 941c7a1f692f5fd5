"""FakeBleRadio: a FAKE of a Raspberry Pi's BLE controller and of bleak, for tests and benchmarks (no radio here).

The gateway's BLE links call bleak's API and nothing else; this module offers
the same names, so a test passes a `FakeBleRadio` where the gateway would use
the `bleak` module:

    radio = FakeBleRadio(max_connections=5, interval_ms=30)
    radio.add(FakeBlePeripheral("AA:BB:CC:00:00:01", mtu=23))
    scanner = radio.BleakScanner(detection_callback=cb)    # cb(BLEDevice, AdvertisementData)
    client = radio.BleakClient(device, disconnected_callback=gone)

What the radio does to traffic, as a Pi's controller does:
  - scanning: every `adv_interval_ms` each peripheral in range whose `advertisement`
    is not None is reported with bleak's own `BLEDevice` and `AdvertisementData`
    (the raw advertising payload parsed as BlueZ would: local name, 16- and
    128-bit service UUIDs and service data, manufacturer data, tx power) and its rssi;
  - connecting takes one connection interval and is refused above `max_connections`
    with BlueZ's `le-connection-abort-by-local`, or when the peripheral is out of range;
  - each write (at most MTU-3 bytes, else refused) and each notification chunk
    arrives one connection interval (`interval_ms`) later, in order;
  - `peripheral.drop()` breaks a connection (both sides are told); `available = False`
    takes a peripheral out of range (no adverts, connects fail).

A peripheral is any object with this interface (FakeBlePeripheral here; sim/vboard_ble.py's
VboardPeripheral puts a virtual board running the real firmware behind it):

    address: str             the BLE address the gateway connects to
    mtu: int                 ATT MTU after the exchange (chunks are MTU-3 bytes)
    available: bool          in range
    advertisement: bytes | None   the raw advertising payload (AD structures), None while not advertising
    rssi: int                dBm reported with each advertisement
    on_write: callable(bytes) | None   gets every chunk the gateway writes to RX
    notify(bytes)            device -> gateway on TX, chunked to MTU-3; ConnectionError when no central listens
    drop()                   break the connection now
                             (notify and drop may be called from another thread: they reach the loop safely)
    connected(client) / disconnected()   called by the radio when a central subscribed / the link ended
                             (optional; so are rssi, default -60, and the `client`/`connects` it keeps)

The simplest way to build one is to subclass FakeBlePeripheral: its notify() hands each
chunk to the connected client (which adds the radio's latency) and its drop() ends the
connection on both sides; override connected()/disconnected() and set on_write.

`FakeBlePeripheral.factory(address, disconnected_callback)` still gives a single
client without a radio (no latency), for the one-device BleLink.
"""

from __future__ import annotations

import asyncio
import uuid

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from gateway.links.ble import RX_CHAR, TX_CHAR, chunks

BASE_UUID = "-0000-1000-8000-00805f9b34fb"
COMPANY_TEST = 0xFFFF  # Bluetooth SIG: "for internal and interoperability tests"


class BleakError(Exception):
    """What bleak raises (bleak.exc.BleakError is not needed to catch it: the gateway catches Exception)."""


def _uuid16(b: bytes) -> str:
    return "0000%04x%s" % (int.from_bytes(b, "little"), BASE_UUID)


def _uuid128(b: bytes) -> str:
    return str(uuid.UUID(bytes=bytes(reversed(b))))


def advertisement_data(raw: bytes, rssi: int = -60) -> AdvertisementData:
    """A raw advertising payload (length, type, data structures) as bleak reports it on BlueZ."""
    name = None
    mfr: dict[int, bytes] = {}
    sdata: dict[str, bytes] = {}
    uuids: list[str] = []
    tx = None
    i = 0
    while i < len(raw):
        n = raw[i]
        if n == 0 or i + 1 + n > len(raw):
            break
        t, d = raw[i + 1], bytes(raw[i + 2:i + 1 + n])
        i += 1 + n
        if t in (0x08, 0x09):
            name = d.decode("utf-8", "replace")
        elif t in (0x02, 0x03):
            uuids += [_uuid16(d[j:j + 2]) for j in range(0, len(d) - 1, 2)]
        elif t in (0x06, 0x07):
            uuids += [_uuid128(d[j:j + 16]) for j in range(0, len(d) - 15, 16)]
        elif t == 0x16 and len(d) >= 2:
            sdata[_uuid16(d[:2])] = d[2:]
        elif t == 0x21 and len(d) >= 16:
            sdata[_uuid128(d[:16])] = d[16:]
        elif t == 0xFF and len(d) >= 2:
            mfr[int.from_bytes(d[:2], "little")] = d[2:]
        elif t == 0x0A and len(d) == 1:
            tx = int.from_bytes(d, "little", signed=True)
    return AdvertisementData(local_name=name, manufacturer_data=mfr, service_data=sdata, service_uuids=uuids,
                             tx_power=tx, rssi=rssi, platform_data=(raw,))


def park_advertisement(device_id: str, waiting: bool) -> bytes:
    """A park device's advertising payload (protocol/SPEC.md section 2), as the firmware builds it.

    Flags, then manufacturer data of company 0xFFFF: 0x50 (park link version 1), one flag
    byte (bit 0 "data waiting") and the device id, which every frame carries in the clear
    anyway. Nothing secret, nothing that changes per frame; 9 bytes plus the id, so any
    id (up to 8 characters) fits legacy advertising's 31.
    """
    name = device_id.encode("ascii")
    return b"\x02\x01\x06" + bytes([len(name) + 5, 0xFF, 0xFF, 0xFF, 0x50, 1 if waiting else 0]) + name


class FakeBlePeripheral:
    """A device's GATT side, driven by a test: `notify(bytes)` sends device bytes, `received` collects writes."""

    def __init__(self, address: str = "FA:KE:00:00:00:01", mtu: int = 23):
        self.address = address
        self.mtu = mtu
        self.available = True
        self.advertisement: bytes | None = None
        self.rssi = -60
        self.client: "FakeBleClient | None" = None
        self.received = bytearray()
        self.on_write = None  # callable(bytes) for a device peer
        self.connects = 0
        self.on_connect = None  # callable() for a device peer: a central connected and subscribed
        self.on_disconnect = None  # callable() for a device peer

    def factory(self, address, disconnected_callback):
        if address != self.address:
            raise ValueError("FakeBle: no peripheral %s" % address)
        return FakeBleClient(self, disconnected_callback)

    def connected(self, client) -> None:
        if self.on_connect is not None:
            self.on_connect()

    def disconnected(self) -> None:
        if self.on_disconnect is not None:
            self.on_disconnect()

    def notify(self, data: bytes) -> None:
        c = self.client
        if c is None or c._notify is None:
            raise ConnectionError("FakeBle: no subscribed central")
        for part in chunks(data, self.mtu):
            c._deliver(bytearray(part))

    def drop(self) -> None:
        c = self.client
        if c is not None:
            c._lost()


class FakeBleClient:
    """The part of bleak.BleakClient the gateway uses, over one peripheral (through a radio or alone)."""

    def __init__(self, periph, disconnected_callback, radio: "FakeBleRadio | None" = None):
        self._p = periph
        self._radio = radio
        self._disconnected = disconnected_callback or (lambda c: None)
        self._notify = None
        self.is_connected = False
        self.mtu_size = periph.mtu
        self.address = periph.address
        self._last_rx = 0.0  # delivery time of the last notification chunk (keeps them in order)
        self._loop: asyncio.AbstractEventLoop | None = None  # the central's loop; a peripheral may call from a thread

    def _elsewhere(self, fn, *args) -> bool:
        """Called from another thread (a virtual board's reader): hand the call to the central's loop."""
        try:
            if asyncio.get_running_loop() is self._loop:
                return False
        except RuntimeError:
            pass
        if self._loop is None:
            return False
        self._loop.call_soon_threadsafe(fn, *args)
        return True

    @property
    def _interval(self) -> float:
        return self._radio.interval_ms / 1000 if self._radio is not None else 0.0

    async def connect(self, **_kw):
        self._loop = asyncio.get_running_loop()
        await asyncio.sleep(self._interval)
        p, radio = self._p, self._radio
        if not p.available:
            raise BleakError("FakeBle: %s not found (out of range)" % p.address)
        if radio is not None:
            if len(radio.connections) >= radio.max_connections:
                radio.refused += 1
                raise BleakError("FakeBle: le-connection-abort-by-local (%d connections)" % len(radio.connections))
            if p.address in radio.connections:
                raise BleakError("FakeBle: %s already connected" % p.address)
            radio.connections[p.address] = self
            radio.peak = max(radio.peak, len(radio.connections))
            radio.connects += 1
        self.is_connected = True
        self.mtu_size = p.mtu
        p.client = self
        p.connects = getattr(p, "connects", 0) + 1
        return True

    async def start_notify(self, char, callback):
        if char != TX_CHAR:
            raise ValueError("FakeBle: no notify characteristic %s" % char)
        if not self.is_connected:
            raise BleakError("FakeBle: not connected")
        self._notify = callback
        hook = getattr(self._p, "connected", None)
        if hook is not None:
            hook(self)

    async def write_gatt_char(self, char, data, response=None):
        if not self.is_connected:
            raise BleakError("FakeBle: not connected")
        if char != RX_CHAR:
            raise ValueError("FakeBle: no writable characteristic %s" % char)
        if len(data) > self.mtu_size - 3:
            raise ValueError("FakeBle: write of %d bytes exceeds MTU-3 = %d" % (len(data), self.mtu_size - 3))
        if self._interval:
            await asyncio.sleep(self._interval)  # one write per connection event
            if not self.is_connected:
                raise BleakError("FakeBle: disconnected during write")
        self._p.received += data
        if self._p.on_write is not None:
            self._p.on_write(bytes(data))

    def _deliver(self, part: bytearray) -> None:
        if self._elsewhere(self._deliver, part):
            return
        if not self._interval:
            self._notify(None, part)
            return
        loop = asyncio.get_running_loop()
        at = max(loop.time() + self._interval, self._last_rx)
        self._last_rx = at
        loop.call_at(at, self._arrive, part)

    def _arrive(self, part: bytearray) -> None:
        if self.is_connected and self._notify is not None:
            self._notify(None, part)

    def _lost(self) -> None:
        """The link broke (drop, out of range): both ends hear of it."""
        if self._elsewhere(self._lost):
            return
        if not self.is_connected:
            return
        self._end()
        self._disconnected(self)

    def _end(self) -> None:
        self.is_connected = False
        p = self._p
        if getattr(p, "client", None) is self:
            p.client = None
            hook = getattr(p, "disconnected", None)
            if hook is not None:
                hook()
        if self._radio is not None and self._radio.connections.get(p.address) is self:
            del self._radio.connections[p.address]

    async def disconnect(self):
        if self.is_connected:
            self._end()
        return True


class FakeBleScanner:
    """bleak.BleakScanner with a detection callback: reports every advertising peripheral in range."""

    def __init__(self, radio: "FakeBleRadio", detection_callback):
        self._radio = radio
        self._cb = detection_callback
        self._task: asyncio.Task | None = None

    async def start(self):
        if self._task is None:
            self._task = asyncio.create_task(self._scan())

    async def stop(self):
        t, self._task = self._task, None
        if t is not None:
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)

    async def _scan(self):
        r = self._radio
        while True:
            for p in list(r.peripherals.values()):
                adv = p.advertisement
                if adv is None or not p.available or self._cb is None:
                    continue
                r.adverts += 1
                data = advertisement_data(adv, getattr(p, "rssi", -60))
                self._cb(BLEDevice(p.address, data.local_name, None), data)
            await asyncio.sleep(r.adv_interval_ms / 1000)


class FakeBleRadio:
    """The Pi's controller and bleak, simulated; pass it where the gateway takes a BLE backend."""

    def __init__(self, max_connections: int = 7, interval_ms: float = 30.0, adv_interval_ms: float = 100.0):
        self.max_connections = max_connections
        self.interval_ms = interval_ms
        self.adv_interval_ms = adv_interval_ms
        self.peripherals: dict[str, object] = {}
        self.connections: dict[str, FakeBleClient] = {}
        self.refused = 0  # connects refused at the controller's limit
        self.peak = 0  # most connections at once
        self.connects = 0
        self.adverts = 0

    def add(self, periph):
        self.peripherals[periph.address] = periph
        return periph

    def remove(self, address: str) -> None:
        p = self.peripherals.pop(address, None)
        if p is not None:
            p.drop()

    def BleakScanner(self, detection_callback=None, service_uuids=None, scanning_mode="active", **_kw):  # noqa: N802
        return FakeBleScanner(self, detection_callback)

    def BleakClient(self, address_or_ble_device, disconnected_callback=None, services=None, **_kw):  # noqa: N802
        address = getattr(address_or_ble_device, "address", address_or_ble_device)
        p = self.peripherals.get(address)
        if p is None:
            raise BleakError("FakeBle: device %s not found" % address)
        return FakeBleClient(p, disconnected_callback, self)

    def __call__(self, address, disconnected_callback):
        """The one-device BleLink's client factory."""
        return self.BleakClient(address, disconnected_callback)


class BlePeer:
    """A battery device on the fake radio: a sim.devsim SimDevice (a CPython TEST PEER) behind a FakeBlePeripheral.

    `await peer.wake(report)` plays one wake: advertise "data waiting", wait for the
    gateway to connect, hello, send the report, advertise "nothing waiting" and stay
    `linger` s for commands, stop
    advertising and wait for the gateway to disconnect (or switch the radio off
    after `grace` s, as a board going to deep sleep does). Returns (advert ->
    connected, advert -> disconnected) in seconds.
    """

    def __init__(self, dev, address: str, mtu: int = 23):
        from sim.devsim import SimLink

        self.dev = dev
        self.periph = FakeBlePeripheral(address, mtu)
        self.link = SimLink()
        self.link.add(dev)
        self.link._write = self._send
        self.periph.on_write = self.link.feed
        self.periph.on_connect = self._connected
        self.periph.on_disconnect = self._disconnected
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self.wakes = 0
        self.gateway_ended = 0  # wakes the gateway ended by disconnecting (the pool freeing its slot)

    def _send(self, data: bytes) -> None:
        try:
            self.periph.notify(data)
        except ConnectionError:
            self.link.unsent += 1

    def _connected(self) -> None:
        self._down.clear()
        self._up.set()

    def _disconnected(self) -> None:
        self._up.clear()
        self._down.set()

    async def wake(self, report: dict | None = None, events=(), linger: float = 0.3, grace: float = 2.0,
                   timeout: float = 20.0, waiting: bool = True) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self.wakes += 1
        self.periph.advertisement = park_advertisement(self.dev.id, waiting)
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
            t_conn = loop.time() - t0
            await self.dev.hello()
            if report is not None:
                self.dev.send(report)
            for ev in events:
                await self.dev.event(ev)
            self.periph.advertisement = park_advertisement(self.dev.id, False)  # everything sent
            await asyncio.sleep(linger)
        finally:
            self.periph.advertisement = None
        try:
            await asyncio.wait_for(self._down.wait(), grace)
            self.gateway_ended += 1
        except asyncio.TimeoutError:
            self.periph.drop()  # deep sleep: the radio goes off
        return t_conn, loop.time() - t0
