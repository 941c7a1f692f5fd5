"""Frames on a byte stream: COBS(envelope || CRC-16 big-endian) followed by 0x00.

The same bytes travel over a UART and, cut into chunks, over a BLE GATT
characteristic; the delimiter makes both self-synchronising.
"""

from protocol import cobs
from protocol.crc16 import crc16
from protocol.errors import CrcError, FrameError, OversizeError

MAX_FRAME = 256
"""Largest frame on the wire, delimiter included. Receivers drop anything longer."""

MAX_ENVELOPE = MAX_FRAME - 2 - 2 - 1
"""Largest envelope: the frame less CRC (2), COBS overhead (at most 2 at this size) and delimiter (1)."""


def encode_frame(envelope):
    n = len(envelope)
    if n > MAX_ENVELOPE:
        raise OversizeError("envelope of %d bytes exceeds %d" % (n, MAX_ENVELOPE))
    body = bytearray(envelope)
    c = crc16(envelope)
    body.append(c >> 8)
    body.append(c & 0xFF)
    return cobs.encode(body) + b"\x00"


def decode_frame(frame):
    """Check and unwrap one frame (with or without its trailing 0x00); returns the envelope bytes."""
    n = len(frame)
    if n and frame[n - 1] == 0:
        frame = frame[: n - 1]
        n -= 1
    if n + 1 > MAX_FRAME:
        raise OversizeError("frame of %d bytes exceeds %d" % (n + 1, MAX_FRAME))
    body = cobs.decode(frame)
    m = len(body)
    if m < 3:
        raise FrameError("frame body of %d bytes is too short" % m)
    env = body[: m - 2]
    want = (body[m - 2] << 8) | body[m - 1]
    got = crc16(env)
    if want != got:
        raise CrcError("crc %04x, expected %04x" % (want, got))
    return env


class Deframer:
    """Splits a byte stream into envelopes, resynchronising on the next 0x00 after garbage.

    feed() yields (envelope, None) for a good frame and (None, ProtocolError) for a
    bad one; the receive buffer is fixed at MAX_FRAME so a stream without
    delimiters cannot grow memory.
    """

    def __init__(self, n=MAX_FRAME):
        self._buf = bytearray(n)
        self._max = n
        self._n = 0
        self._overflow = 0

    def reset(self):
        self._n = 0
        self._overflow = 0

    def feed(self, data):
        start = 0
        end = len(data)
        while start < end:
            z = data.find(b"\x00", start)
            if z < 0:
                z = end  # no delimiter yet: hold the rest
            if z == end or self._n or self._overflow:
                k = z - start  # held up to MAX_FRAME - 1 bytes in all; beyond that only counted
                n = self._n
                if self._overflow or n + k > self._max - 1:
                    self._overflow += k
                else:
                    self._buf[n : n + k] = data[start:z]
                    self._n = n + k
                if z == end:
                    return
                n = self._n
                over = self._overflow
                self._n = 0
                self._overflow = 0
                if over:
                    yield None, OversizeError("%d bytes without a delimiter exceed %d" % (n + over + 1, self._max))
                else:
                    try:
                        yield decode_frame(bytes(self._buf[:n])), None
                    except FrameError as e:
                        yield None, e
            elif z > start:
                if z - start < self._max:
                    try:
                        yield decode_frame(data[start:z]), None
                    except FrameError as e:
                        yield None, e
                else:
                    yield None, OversizeError("%d bytes without a delimiter exceed %d" % (z - start + 1, self._max))
            start = z + 1

    @property
    def pending(self):
        """Bytes of an unfinished frame held; a link may drop them after a silence."""
        return self._n + self._overflow
