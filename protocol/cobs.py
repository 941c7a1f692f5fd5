"""Consistent Overhead Byte Stuffing (Cheshire & Baker 1999).

Removes every 0x00 from a frame body so 0x00 can delimit frames. Overhead is one
byte per started 254 bytes. On CPython the `cobs` C extension is used when present.
"""

import sys

from protocol.errors import CobsError


def encode(data):
    n = len(data)
    out = bytearray(n + n // 254 + 2)
    code_at = 0
    o = 1
    code = 1
    i = 0
    while i < n:
        b = data[i]
        i += 1
        if b:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF and i < n:
                out[code_at] = code
                code_at = o
                o += 1
                code = 1
        else:
            out[code_at] = code
            code_at = o
            o += 1
            code = 1
    out[code_at] = code
    return bytes(out[:o])


def decode(data):
    n = len(data)
    out = bytearray()
    i = 0
    while i < n:
        code = data[i]
        if code == 0:
            raise CobsError("zero byte inside frame at offset %d" % i)
        end = i + code
        if end > n:
            raise CobsError("block at offset %d runs past the end" % i)
        j = i + 1
        while j < end:
            b = data[j]
            if b == 0:
                raise CobsError("zero byte inside frame at offset %d" % j)
            out.append(b)
            j += 1
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


if sys.implementation.name != "micropython":  # the C extension where installed; a device interns none of it
    from protocol.cobs_host import *  # noqa: E402,F401,F403
