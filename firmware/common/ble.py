"""BLE peripheral transport: the park link service of SPEC 2 on MicroPython's `bluetooth`.

The gateway writes frames to RX; the device's frames go out as notifications on TX in
chunks of MTU-3, only after the central's first write on the connection: the gateway
writes once it has subscribed, so nothing is lost before it listens, and a phone that
connects and only listens takes nothing. While no central is connected, frames are held
and the advertisement says so (one flag byte, SPEC 2), so the gateway connects only
when needed. A central that never writes is not a gateway: it is dropped after
_IDLE_MS. close() switches the radio off (a battery device before deep sleep).
"""

import bluetooth
from micropython import const

from common import clock
from common.link import RadioLink

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_F_WRITE_NR = const(0x0004)
_F_WRITE = const(0x0008)
_F_NOTIFY = const(0x0010)
_IDLE_MS = const(10000)
_RX_BUF = const(512)

_SERVICE = (
    bluetooth.UUID("7061726b-0001-4c69-6e6b-000000000001"),
    ((bluetooth.UUID("7061726b-0001-4c69-6e6b-000000000002"), _F_WRITE | _F_WRITE_NR),
     (bluetooth.UUID("7061726b-0001-4c69-6e6b-000000000003"), _F_NOTIFY)),
)


class BleLink(RadioLink):
    def __init__(self, cfg, kid):
        RadioLink.__init__(self)
        b = bluetooth.BLE()
        b.active(True)
        b.config(gap_name="park-" + kid.decode(), mtu=cfg["mtu"])
        b.irq(self._irq)
        ((self._rx, self._tx),) = b.gatts_register_services((_SERVICE,))
        b.gatts_set_buffer(self._rx, _RX_BUF, True)
        self._b = b
        self._kid = kid
        self._iv = cfg["adv_ms"] * 1000
        self._conn = None
        self._mtu = 23
        self._at = clock.ticks_ms()  # of the connection
        self._ready = False  # the central wrote: notifications may go
        self._flag = None    # data-waiting flag advertised, None while not advertising
        self.strangers = 0
        self._advertise()

    def _irq(self, ev, data):
        if ev == _IRQ_CENTRAL_CONNECT:
            if self._conn is not None:  # one central at a time
                self._disconnect(data[0])
                return
            self._conn = data[0]
            self._mtu = 23
            self._at = clock.ticks_ms()
            self._ready = False
            self._flag = None  # a connection ends advertising
            self._peer = True
        elif ev == _IRQ_CENTRAL_DISCONNECT:
            if data[0] == self._conn:
                self._conn = None
                self._advertise()
        elif ev == _IRQ_GATTS_WRITE:
            if data[0] == self._conn:
                self._ready = True
        elif ev == _IRQ_MTU_EXCHANGED:
            if data[0] == self._conn:
                self._mtu = data[1]

    def _advertise(self):
        f = 1 if self._held else 0
        if self._conn is not None or f == self._flag:
            return
        k = self._kid
        try:
            self._b.gap_advertise(self._iv, b"\x02\x01\x06" + bytes((5 + len(k), 0xFF, 0xFF, 0xFF, 0x50, f)) + k)
        except OSError:  # the controller is busy: the next write or poll tries again
            return
        self._flag = f

    def _notify(self, chunk):
        try:
            self._b.gatts_notify(self._conn, self._tx, chunk)  # type: ignore[call-arg, arg-type]  # stub lacks data
        except OSError:  # the controller's queue is full: the rest at the next poll
            return 0
        return len(chunk)

    def _pump(self):
        c = self._conn
        if c is None:
            return
        if not self._ready:
            if clock.ticks_diff(clock.ticks_ms(), self._at) >= _IDLE_MS:
                self.strangers += 1
                self._disconnect(c)
            return
        self.drain(self._notify, self._mtu - 3)

    def _disconnect(self, c):
        try:
            self._b.gap_disconnect(c)
        except OSError:  # gone already
            pass

    def read(self):
        self._pump()
        if self._flag is None and self._conn is None:
            self._advertise()
        if self._conn is None:
            return None
        return self._b.gatts_read(self._rx) or None

    def write(self, data):
        self.hold(data)
        self._pump()
        self._advertise()

    def close(self):
        b = self._b
        try:
            b.gap_advertise(None)  # type: ignore[arg-type]  # None stops advertising
            if self._conn is not None:
                b.gap_disconnect(self._conn)
            b.active(False)
        except OSError:  # the radio goes off with the deep sleep anyway
            pass
