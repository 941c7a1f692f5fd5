"""Consistent Overhead Byte Stuffing (Cheshire & Baker 1999).

Removes every 0x00 from a frame body so 0x00 can delimit frames. Overhead is one
byte per started 254 bytes. On CPython the `cobs` C extension is used when present.
"""

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


try:
    import sys

    if sys.implementation.name == "cpython":
        from cobs import cobs as _c

        def _fast_decode(data):
            try:
                return _c.decode(data)
            except _c.DecodeError as e:
                raise CobsError(str(e))

        encode = _c.encode  # noqa: F811
        decode = _fast_decode  # noqa: F811
except ImportError:
    pass
