"""Token reader frames: what a UART/NFC/QR reader module sends the locker.

One presentation per line of ASCII: "<comp> <token in base64>\\n" (a trailing
"\\r" is ignored), e.g. "3 gkmF...". The compartment is the one the user chose
on the reader's keypad; the token is protocol/token.py bytes. A line longer than
128 bytes is discarded up to its newline and reported once as malformed; nothing
from a bad line is ever half-used.
"""

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

import binascii

_MAX_LINE = const(128)


class ReaderParser:
    """Splits the reader's bytes into presentations; `uart` (optional) is the reader's UART, which
    poll() reads."""

    __slots__ = ("uart", "_buf")  # _buf None: skipping an overlong line up to its newline

    def __init__(self, uart=None):
        self.uart = uart
        self._buf = bytearray()  # type: bytearray | None

    def poll(self):
        """feed() what the UART has received."""
        n = self.uart.any()
        return self.feed(self.uart.read(n) or b"") if n else ()

    def feed(self, data):
        """Consume bytes; return a list of (comp, raw token) or (comp or 0, None) for a malformed line."""
        out = []
        for b in data:
            if b == 10:
                buf = self._buf
                self._buf = bytearray()
                if not buf:  # an empty line, or the end of an overlong one
                    continue
                line = bytes(buf).strip()
                sp = line.find(b" ")
                comp = 0
                raw = None
                if sp > 0:
                    for ch in line[:sp]:
                        if ch < 48 or ch > 57 or comp > 99:
                            comp = -1
                            break
                        comp = comp * 10 + ch - 48
                    if comp < 0:
                        comp = 0
                    else:
                        try:
                            raw = binascii.a2b_base64(line[sp + 1:]) or None
                        except Exception:  # ValueError on ESP32 and CPython; a bare Exception from
                            pass  # micropython-lib's binascii
                out.append((comp, raw))
            elif self._buf is None:
                continue
            elif len(self._buf) >= _MAX_LINE:
                self._buf = None
                out.append((0, None))
            else:
                self._buf.append(b)
        return out


def encode_line(comp, raw):
    """The reader line for a presentation (used by tests and the bench tools)."""
    return b"%d " % comp + binascii.b2a_base64(raw).strip() + b"\n"
