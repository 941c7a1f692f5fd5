"""FakeBle: a stand-in for a BLE radio and a peripheral, for tests only (there is no radio here).

It implements the part of bleak.BleakClient that BleLink uses (connect,
start_notify, write_gatt_char, disconnect, mtu_size, disconnected_callback)
and enforces what a real radio does to data: writes longer than MTU-3 are
refused, notifications arrive in MTU-3 chunks. A test drives the peripheral
side: `notify(bytes)` sends device bytes, `received` collects what the gateway
wrote, `drop()` breaks the connection, `available` simulates range.
"""

from __future__ import annotations

import asyncio

from gateway.links.ble import RX_CHAR, TX_CHAR, chunks


class FakeBlePeripheral:
    def __init__(self, address: str = "FA:KE:00:00:00:01", mtu: int = 23):
        self.address = address
        self.mtu = mtu
        self.available = True
        self.client: "FakeBleClient | None" = None
        self.received = bytearray()
        self.on_write = None  # callable(bytes) for a device peer
        self.connects = 0

    def factory(self, address, disconnected_callback):
        if address != self.address:
            raise ValueError("FakeBle: no peripheral %s" % address)
        return FakeBleClient(self, disconnected_callback)

    def notify(self, data: bytes) -> None:
        c = self.client
        if c is None or c._notify is None:
            raise ConnectionError("FakeBle: no subscribed central")
        for part in chunks(data, self.mtu):
            c._notify(None, bytearray(part))

    def drop(self) -> None:
        c = self.client
        self.client = None
        if c is not None:
            c.is_connected = False
            c._disconnected(c)


class FakeBleClient:
    def __init__(self, periph: FakeBlePeripheral, disconnected_callback):
        self._p = periph
        self._disconnected = disconnected_callback or (lambda c: None)
        self._notify = None
        self.is_connected = False
        self.mtu_size = periph.mtu

    async def connect(self):
        await asyncio.sleep(0)
        if not self._p.available:
            raise ConnectionError("FakeBle: %s not in range" % self._p.address)
        self.is_connected = True
        self._p.client = self
        self._p.connects += 1
        return True

    async def start_notify(self, char, callback):
        if char != TX_CHAR:
            raise ValueError("FakeBle: no notify characteristic %s" % char)
        self._notify = callback

    async def write_gatt_char(self, char, data, response=False):
        if not self.is_connected:
            raise ConnectionError("FakeBle: not connected")
        if char != RX_CHAR:
            raise ValueError("FakeBle: no writable characteristic %s" % char)
        if len(data) > self.mtu_size - 3:
            raise ValueError("FakeBle: write of %d bytes exceeds MTU-3 = %d" % (len(data), self.mtu_size - 3))
        self._p.received += data
        if self._p.on_write is not None:
            self._p.on_write(bytes(data))

    async def disconnect(self):
        self.is_connected = False
        if self._p.client is self:
            self._p.client = None
        return True
