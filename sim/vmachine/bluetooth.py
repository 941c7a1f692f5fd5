# bluetooth (virtual-board build): MicroPython's low-level BLE API, the GATT-server half
# park-edge firmware uses (peripheral role: advertising, services, writes, notifications).
#
# The WebAssembly port has no radio; on a virtual board this module is the controller.
# The central is on the host (sim/vboard_ble.py): its connects, writes, MTU exchange and
# disconnects arrive through js.vboard as the IRQs a chip delivers; gatts_notify and
# gap_advertise go out the same way. MicroPython-compatible; kept small, because on a
# chip this module is C and its code costs no Python heap.
import js as _js
import binascii as _ba

try:
    _vb = _js.vboard
except AttributeError:
    raise ImportError("bluetooth: no vboard is running this VM")

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020


class UUID:
    def __init__(self, v):
        self._s = ("%04x" % v) if isinstance(v, int) else str(v).lower()

    def __eq__(self, o):
        return isinstance(o, UUID) and o._s == self._s

    def __hash__(self):
        return hash(self._s)

    def __str__(self):
        return self._s

    def __repr__(self):
        return "UUID('%s')" % self._s


def _hex(b):
    return _ba.hexlify(bytes(b)).decode()


class _BLE:
    def __init__(self):
        self._on = False
        self._irq = None
        self._h = {}  # value handle -> [uuid str, value bytes, capacity, append]
        self._by_uuid = {}
        self._conn = None
        self._mtu = 23
        self._pref = 23
        self._adv = None  # [interval_us, adv hex, resp hex, connectable] while advertising
        self._name = "MPY ESP32"
        _vb.ble_set_handler(self._deliver)

    def active(self, v=None):
        if v is None:
            return self._on
        v = bool(v)
        if self._on and not v:
            self._conn = None
            self._adv = None
            self._h = {}
            self._by_uuid = {}
        self._on = v
        _vb.ble_active(v)
        return v

    def _need(self):
        if not self._on:
            raise OSError(19)  # ENODEV, as the ESP32 port when the radio is off

    def config(self, *a, **kw):
        if a:
            k = a[0]
            if k == "mac":
                return (0, _ba.unhexlify(_vb.unique_id()))
            if k == "gap_name":
                return self._name
            if k == "mtu":
                return self._pref
            raise ValueError("unknown config param")
        if "gap_name" in kw:
            self._name = kw["gap_name"]
        if "mtu" in kw:
            m = kw["mtu"]
            if not 23 <= m <= 517:
                raise ValueError("mtu")
            self._pref = m
            _vb.ble_pref_mtu(m)

    def irq(self, handler):
        self._irq = handler

    def gatts_register_services(self, services):
        self._need()
        out = []
        n = 1
        for svc in services:
            hs = []
            n += 1
            for ch in svc[1]:
                n += 1  # the characteristic declaration, then its value
                u = str(ch[0])
                self._h[n] = [u, b"", 20, False]
                self._by_uuid[u] = n
                hs.append(n)
                n += 1
                if ch[1] & (FLAG_NOTIFY | FLAG_INDICATE):
                    n += 1  # the CCCD
                for d in (ch[2] if len(ch) > 2 else ()):
                    self._h[n] = [str(d[0]), b"", 20, False]
                    hs.append(n)
                    n += 1
            out.append(tuple(hs))
        return tuple(out)

    def gatts_read(self, h):
        a = self._h[h]
        v = a[1]
        if a[3]:
            a[1] = b""
        return v

    def gatts_write(self, h, data, send_update=False):
        a = self._h[h]
        a[1] = bytes(data)[:a[2]]
        if send_update and self._conn is not None:
            self.gatts_notify(self._conn, h)

    def gatts_set_buffer(self, h, n, append=False):
        a = self._h[h]
        a[2] = n
        a[3] = bool(append)

    def gatts_notify(self, conn, h, data=None):
        self._need()
        if conn != self._conn:
            raise OSError(128)  # ENOTCONN
        v = self._h[h][1] if data is None else bytes(data)
        if len(v) > self._mtu - 3:
            _vb.event("ble_truncated", '{"len": %d, "mtu": %d}' % (len(v), self._mtu))
            v = v[:self._mtu - 3]
        _vb.ble_notify(conn, self._h[h][0], _hex(v))

    gatts_indicate = gatts_notify

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True):
        self._need()
        if interval_us is None:
            self._adv = None
            _vb.ble_adv(None)
            return
        old = self._adv or [0, "", "", True]
        adv = old[1] if adv_data is None else _hex(adv_data)
        resp = old[2] if resp_data is None else _hex(resp_data)
        if len(adv) > 62 or len(resp) > 62:
            raise OSError(22)  # EINVAL: legacy advertising carries 31 bytes
        self._adv = [interval_us, adv, resp, connectable]
        if self._conn is None:
            _vb.ble_adv(adv)

    def gap_disconnect(self, conn):
        if conn != self._conn:
            return False
        _vb.ble_disconnect(conn)
        self._deliver("disconnect", conn, 0, "")
        return True

    def gattc_exchange_mtu(self, conn):
        pass

    def _deliver(self, kind, conn, arg, data):
        """An event from the host's central; returns False for a refused connection."""
        f = self._irq
        if kind == "connect":
            if not self._on or self._adv is None or not self._adv[3] or self._conn is not None:
                return False
            self._conn = conn
            self._mtu = 23
            _vb.ble_adv(None)  # a connection ends advertising
            if f:
                f(1, (conn, 0, _ba.unhexlify(data or "000000000000")))
            if arg > 23:
                self._mtu = min(arg, self._pref)
                if f:
                    f(21, (conn, self._mtu))
            return True
        if conn != self._conn:
            return False
        if kind == "disconnect":
            self._conn = None
            self._adv = None  # the stack does not resume advertising by itself
            if f:
                f(2, (conn, 0, b"\0\0\0\0\0\0"))
        elif kind == "write":
            h = self._by_uuid.get(data[:36])
            if h is None:
                return False
            a = self._h[h]
            v = _ba.unhexlify(data[36:])
            a[1] = ((a[1] + v) if a[3] else v)[:a[2]]
            if f:
                f(3, (conn, h))
        return True


_ble = None


def BLE():
    global _ble
    if _ble is None:
        _ble = _BLE()
    return _ble
