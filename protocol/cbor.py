"""A small, strict CBOR (RFC 8949) codec for the protocol's subset.

Encodes deterministically (RFC 8949 section 4.2.3, "length-first" core
deterministic encoding as in CTAP2: shortest heads, definite lengths, map keys
sorted by the length of their encoding, then bytewise), so device and gateway produce
the same bytes, and accepts only that encoding, so every message has exactly
one form on the wire. Decodes untrusted input without trusting it: no tags,
floats, undefined or indefinite lengths; nesting is bounded; a length is
checked against the bytes that are really left before anything is allocated;
duplicate or unsorted map keys and trailing bytes are errors.
"""

from protocol.errors import CborError

MAX_DEPTH = 6


def _head(out, m, n):
    m <<= 5
    if n < 24:
        out.append(m | n)
    elif n < 0x100:
        out.append(m | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(m | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(m | 26)
        out.extend(n.to_bytes(4, "big"))
    elif n < 0x10000000000000000:
        out.append(m | 27)
        out.extend(n.to_bytes(8, "big"))
    else:
        raise CborError("integer too large for CBOR")


def _enc(out, v):
    if v is None:
        out.append(0xF6)
    elif v is True:
        out.append(0xF5)
    elif v is False:
        out.append(0xF4)
    elif isinstance(v, int):
        if v >= 0:
            _head(out, 0, v)
        else:
            _head(out, 1, -1 - v)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        _head(out, 2, len(v))
        out.extend(v)
    elif isinstance(v, str):
        b = v.encode("utf-8")
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(v, (list, tuple)):
        _head(out, 4, len(v))
        for x in v:
            _enc(out, x)
    elif isinstance(v, dict):
        items = []
        for k in v:
            kb = bytearray()
            _enc(kb, k)
            items.append((bytes(kb), v[k]))
        items.sort(key=lambda x: (len(x[0]), x[0]))
        _head(out, 5, len(items))
        for kb, x in items:
            out.extend(kb)
            _enc(out, x)
    else:
        raise CborError("cannot encode " + type(v).__name__)


def dumps(v):
    out = bytearray()
    _enc(out, v)
    return bytes(out)


def _dec(buf, i, end, d):
    """Decode the item at buf[i] nested d deep; returns (value, next index)."""
    if i >= end:
        raise CborError("truncated at offset %d" % i)
    ib = buf[i]
    major = ib >> 5
    ai = ib & 31
    start = i
    i += 1
    if major == 7:
        if ai == 20:
            return False, i
        if ai == 21:
            return True, i
        if ai == 22:
            return None, i
        if 25 <= ai <= 27:
            raise CborError("float at offset %d (not used by this protocol)" % start)
        raise CborError("simple value %d at offset %d" % (ai, start))
    if ai < 24:
        n = ai
    else:
        if ai == 24:
            w = 1
        elif ai == 25:
            w = 2
        elif ai == 26:
            w = 4
        elif ai == 27:
            w = 8
        elif ai == 31:
            raise CborError("indefinite length at offset %d" % start)
        else:
            raise CborError("reserved additional info %d at offset %d" % (ai, start))
        if i + w > end:
            raise CborError("truncated head at offset %d" % start)
        n = int.from_bytes(bytes(buf[i : i + w]), "big")
        if n < (24 if w == 1 else 1 << (4 * w)):
            raise CborError("non-shortest head at offset %d" % start)
        i += w
    if major == 0:
        return n, i
    if major == 1:
        return -1 - n, i
    if major == 2 or major == 3:
        if n > end - i:
            raise CborError("string of %d bytes at offset %d exceeds the %d left" % (n, start, end - i))
        raw = bytes(buf[i : i + n])
        if major == 2:
            return raw, i + n
        try:
            return str(raw, "utf-8"), i + n
        except UnicodeError:
            raise CborError("invalid UTF-8 at offset %d" % start)
    if major == 6:
        raise CborError("tag at offset %d (tags are not used by this protocol)" % start)
    if d >= MAX_DEPTH:
        raise CborError("nesting deeper than %d at offset %d" % (MAX_DEPTH, start))
    if major == 4:
        if n > end - i:
            raise CborError("array of %d items at offset %d exceeds the %d bytes left" % (n, start, end - i))
        out = []
        for _ in range(n):
            v, i = _dec(buf, i, end, d + 1)
            out.append(v)
        return out, i
    # major 5: map
    if 2 * n > end - i:
        raise CborError("map of %d pairs at offset %d exceeds the %d bytes left" % (n, start, end - i))
    out = {}
    prev = b""
    for _ in range(n):
        ks = i
        k, i = _dec(buf, i, end, d + 1)
        tk = type(k)
        if tk is not int and tk is not str:
            raise CborError("map key of type %s at offset %d" % (tk.__name__, ks))
        kb = bytes(buf[ks:i])
        if len(kb) < len(prev) or (len(kb) == len(prev) and kb <= prev):
            raise CborError("map key at offset %d is duplicate or out of order" % ks)
        prev = kb
        v, i = _dec(buf, i, end, d + 1)
        out[k] = v
    return out, i


def loads(buf):
    """Decode exactly one data item that fills `buf`."""
    end = len(buf)
    v, i = _dec(buf, 0, end, 0)
    if i != end:
        raise CborError("%d trailing bytes after offset %d" % (end - i, i))
    return v
