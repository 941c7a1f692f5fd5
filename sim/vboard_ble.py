"""VboardPeripheral: a virtual board's BLE radio as a peripheral of the fake BLE radio.

A stand-in for the air between a gateway and a board running the real firmware (there is
no radio here). It has the interface of `sim.fakeble.FakeBlePeripheral`, so a fake radio
holds virtual boards and CPython peers alike:

    address        the board's BLE address (from its unique id)
    mtu            the ATT MTU a central gets: min(the central's, the firmware's preferred)
    available      in range (the radio model may take it away)
    advertisement  the firmware's gap_advertise payload (bytes), None while it does not
                   advertise (connected, radio off, deep sleep)
    client         set by a connecting client -> the firmware's _IRQ_CENTRAL_CONNECT (and
                   _IRQ_MTU_EXCHANGED); cleared -> _IRQ_CENTRAL_DISCONNECT
    on_write(b)    what the central wrote to RX -> the firmware's _IRQ_GATTS_WRITE
    notify(b)      the firmware's gatts_notify on TX, to the subscribed central
    drop()         the link breaks: the central's disconnect callback and the firmware's IRQ

A connection the firmware refuses or ends (gap_disconnect, deep sleep, a reset) reaches the
central as a disconnect. Board events arrive on the board's reader thread; with an event
loop (given, or the one running when a client connects) they are handed to it.

`BleCentral` is a synchronous test central over one peripheral, for stepped boards.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any

from sim.fakeble import FakeBlePeripheral

RX_CHAR = "7061726b-0001-4c69-6e6b-000000000002"
TX_CHAR = "7061726b-0001-4c69-6e6b-000000000003"
CENTRAL_MTU = 247  # what BlueZ offers on a Raspberry Pi


class VboardPeripheral(FakeBlePeripheral):
    def __init__(self, board: Any, mtu: int = CENTRAL_MTU, loop: asyncio.AbstractEventLoop | None = None):
        self.board = board
        self._client: Any = None
        self._conn = 0
        self._pref = 23
        self._adv: bytes | None = None
        self._radio_on = False
        self._loop = loop
        self._mu = threading.Lock()
        self.unheard = 0  # notified bytes no subscribed central received
        uid = bytes.fromhex(board._cfg["uid"])
        super().__init__(address=":".join("%02X" % b for b in uid[:6]), mtu=mtu)
        self.on_write = self._written  # type: ignore[assignment]
        board.ble_listen(self._event)
        st = board.ble_state
        self._radio_on, self._pref = st["on"], st["pref_mtu"]
        self._adv = bytes.fromhex(st["adv"]) if st["adv"] is not None else None

    # -- the FakeBlePeripheral interface --

    @property
    def mtu(self) -> int:
        return min(self._central_mtu, self._pref)

    @mtu.setter
    def mtu(self, v: int) -> None:
        self._central_mtu = v

    @property
    def advertisement(self) -> bytes | None:
        return self._adv

    @advertisement.setter
    def advertisement(self, v: bytes | None) -> None:
        pass  # the firmware decides what it advertises

    @property
    def client(self) -> Any:
        return self._client

    @client.setter
    def client(self, c: Any) -> None:
        old, self._client = self._client, c
        if c is not None and c is not old:
            if self._loop is None:
                try:
                    self._loop = asyncio.get_running_loop()
                except RuntimeError:
                    pass
            self._conn = (self._conn + 1) & 0xFFFF
            self._adv = None
            self.board.ble_send("connect", self._conn, self._central_mtu, "c0ffee000001")
        elif c is None and old is not None:
            self.board.ble_send("disconnect", self._conn)

    def _written(self, data: bytes) -> None:
        self.board.ble_send("write", self._conn, 0, RX_CHAR + bytes(data).hex())

    # -- board events (reader thread) --

    def _event(self, ev: dict) -> None:
        k = ev.get("k")
        if k == "adv":
            self._adv = bytes.fromhex(ev["hex"]) if ev.get("hex") is not None else None
        elif k == "pref_mtu":
            self._pref = int(ev["arg"])
        elif k in ("on", "off"):
            self._radio_on = k == "on"
            if k == "off":
                self._adv = None
                self._call(self._gone, None)
        elif k == "disconnect":
            self._call(self._gone, ev.get("conn"))
        elif k == "notify" and ev.get("uuid") == TX_CHAR and ev.get("conn") == self._conn:
            self._call(self._notified, bytes.fromhex(ev["hex"]))

    def _call(self, fn, arg) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, arg)
                return
            except RuntimeError:  # closed meanwhile
                pass
        with self._mu:
            fn(arg)

    def _notified(self, data: bytes) -> None:
        try:
            self.notify(data)
        except ConnectionError:  # nobody subscribed: lost, as on air
            self.unheard += len(data)

    def _gone(self, conn: int | None) -> None:
        """The board ended the connection (gap_disconnect, refused, reset, deep sleep):
        for the central it is a broken link."""
        if self._client is None or (conn is not None and conn != self._conn):
            return
        self.drop()


class BleCentral:
    """A synchronous test central for one VboardPeripheral on a stepped board: connect,
    write frames (chunked to MTU-3, as a gateway must), read what was notified."""

    def __init__(self, periph: VboardPeripheral):
        self.p = periph
        self.rx = bytearray()
        self.disconnects = 0
        self.is_connected = False
        self.mtu_size = 23
        self._notify = None
        self._mu = threading.Lock()

    def _disconnected(self, _c: Any) -> None:
        self.disconnects += 1

    @property
    def connected(self) -> bool:
        return self.p.client is self and self.is_connected

    def connect(self) -> None:
        if not self.p.available:
            raise ConnectionError("out of range")
        self.mtu_size = self.p.mtu
        self.is_connected = True
        self._notify = self._rx
        self.p.client = self

    def _rx(self, _ch: Any, data: bytearray) -> None:
        with self._mu:
            self.rx += data

    def _deliver(self, part: bytearray) -> None:  # the fake radio's client interface
        self._rx(None, part)

    def _lost(self) -> None:
        if self.is_connected:
            self.disconnect()
            self._disconnected(self)

    def write(self, data: bytes) -> None:
        if not self.connected:
            raise ConnectionError("not connected")
        n = self.mtu_size - 3
        for i in range(0, len(data), n):
            self.p.on_write(bytes(data[i:i + n]))

    def read(self, n: int = 65536) -> bytes:
        with self._mu:
            out = bytes(self.rx[:n])
            del self.rx[:n]
        return out

    def disconnect(self) -> None:
        self.is_connected = False
        if self.p.client is self:
            self.p.client = None

    def close(self) -> None:
        self.disconnect()
