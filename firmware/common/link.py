"""Byte transports for the protocol link, chosen by the device config (`link.kind`).

Serial (a UART), BLE (common.ble: the park link service of SPEC 2) and Wi-Fi + TCP
(common.wifi) offer one contract, so the session never knows which one it talks through:

    read()      bytes received since the last call, or None; never blocks
    write(f)    send a frame, or hold it until a peer is there; never blocks
    new_peer()  True once after a new peer connected: it knows nothing of this
                session, so the runtime says hello
    busy()      frames are held for a peer that is not there yet (stay awake)
    close()     radio off, before deep sleep
    fault       None, or (F_RADIO, why) when the configured radio could not be used
                and this link is the fallback

common.start.init_runtime picks one at boot (that code leaves the heap after it); a radio
module is imported only when the config asks for it.
"""

from micropython import const

from common.hal import make_uart

_HOLD_MAX = const(2048)
"""Bytes of frames a radio link holds while no peer is there; the oldest go first."""


class Link:
    """A link that carries nothing: a radio-only device whose radio cannot be used keeps
    doing its job on its own (a pole keeps lighting its path)."""

    fault = None  # type: tuple | None

    def read(self):
        return None

    def write(self, data):
        pass

    def new_peer(self):
        return False

    def busy(self):
        return False

    def close(self):
        pass


class UartLink(Link):
    def __init__(self, cfg):
        self.uart = make_uart(cfg["uart"], cfg["baud"], cfg["tx"], cfg["rx"])

    def read(self):
        n = self.uart.any()
        if not n:
            return None
        return self.uart.read(n)

    def write(self, data):
        self.uart.write(data)


class RadioLink(Link):
    """Frames held (bounded) while no peer listens, drained in chunks when one does."""

    def __init__(self):
        self._held = []
        self._n = 0
        self._off = 0  # bytes of the first held frame already sent
        self._peer = False
        self.dropped = 0

    def hold(self, frame):
        self._held.append(bytes(frame))
        self._n += len(frame)
        while self._n > _HOLD_MAX and len(self._held) > 1:
            f = self._held.pop(1 if self._off else 0)  # never cut a frame already half sent
            self._n -= len(f)
            self.dropped += 1

    def drain(self, send, n):
        """Send held frames through send(chunk) (returns bytes taken, 0 for "not now"),
        chunks of at most n bytes."""
        while self._held:
            f = self._held[0]
            k = send(f[self._off:self._off + n])
            if not k:
                return
            self._off += k
            if self._off >= len(f):
                self._held.pop(0)
                self._n -= len(f)
                self._off = 0

    def new_peer(self):
        p = self._peer
        self._peer = False
        return p

    def busy(self):
        return bool(self._held)
