"""Token reader frames: what a UART/NFC/QR reader module sends the locker.

One presentation per line of ASCII: "<comp> <token in base64>\\n" (a trailing
"\\r" is ignored), e.g. "3 gkmF...". The compartment is the one the user chose
on the reader's keypad; the token is protocol/token.py bytes. A line longer than
MAX_LINE is discarded up to its newline and reported once as malformed; nothing
from a bad line is ever half-used.
"""

import binascii

MAX_LINE = 128


class ReaderParser:
    __slots__ = ("_buf", "_skip")

    def __init__(self):
        self._buf = bytearray()
        self._skip = False

    def feed(self, data):
        """Consume bytes; return a list of (comp, raw token) or (comp, None) for a malformed line."""
        out = []
        for b in data:
            if b == 10:
                if self._skip:
                    self._skip = False
                elif self._buf:
                    out.append(parse_line(bytes(self._buf)))
                self._buf = bytearray()
            elif self._skip:
                continue
            elif len(self._buf) >= MAX_LINE:
                self._skip = True
                self._buf = bytearray()
                out.append((0, None))
            else:
                self._buf.append(b)
        return out


def parse_line(line):
    """(comp, raw) from one line, or (comp or 0, None) if it is malformed."""
    line = line.strip()
    sp = line.find(b" ")
    if sp <= 0:
        return (0, None)
    c = line[:sp]
    comp = 0
    for ch in c:
        if ch < 48 or ch > 57 or comp > 99:
            return (0, None)
        comp = comp * 10 + ch - 48
    try:
        raw = binascii.a2b_base64(line[sp + 1:])
    except Exception:  # ValueError on ESP32 and CPython; a bare Exception from micropython-lib's binascii
        return (comp, None)
    if not raw:
        return (comp, None)
    return (comp, raw)


def encode_line(comp, raw):
    """The reader line for a presentation (used by tests and the bench tools)."""
    return b"%d " % comp + binascii.b2a_base64(raw).strip() + b"\n"
