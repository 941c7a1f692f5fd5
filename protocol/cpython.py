"""CPython-only accelerators for the gateway's hot path; never deployed to a device.

`open_envelope` and `Deframer` are the gateway's receive path (SPEC section 7) with the
common case fused and in C where a C call exists; whatever they do not take themselves
goes to the portable code, so outcomes and errors are the portable path's
(tests/protocol/test_fast_path.py).

`loads` decodes a payload with cbor2 (a Rust core) and accepts exactly what the
portable decoder (protocol.cbor) accepts: the protocol's subset (integers of at
most 64 bits, byte and text strings, arrays, maps with integer or text keys,
false, true, null; nesting at most cbor.MAX_DEPTH deep) in its one deterministic
encoding. cbor2 also decodes floats, tags, undefined and other simple values: any
such value in the result is refused. Tags that cbor2 turns into plain values
(bignums, shared values, string references) and every non-shortest form make the
shortest encoding of the result differ in length from the payload, which is
cheaper to compute than a re-encoding; maps are re-encoded and compared.
tests/protocol/test_properties.py drives both decoders to identical outcomes.
"""

import re
from binascii import crc_hqx
from hmac import compare_digest as _ct_equal

import cbor2
from cobs import cobs as _cobs

from protocol import codec, cose, messages
from protocol.cbor import MAX_DEPTH
from protocol.errors import CborError, FrameError, OversizeError, ProtocolError, TagError, UnknownKeyError
from protocol.framing import MAX_FRAME, Deframer as _Deframer, decode_frame
from protocol.replay import WINDOW, ReplayWindow

_loads = cbor2.loads
_dumps = cbor2.dumps
_TAG_HEAD = re.compile(rb"[\xc2\xc3\xd8-\xdb]").search
"""A byte that may start a tag cbor2 decodes into the subset: bignums (0xc2, 0xc3: 65536 as
c2 43 01 00 00 is as long as its shortest form), and 0xd8-0xdb (self-described CBOR, string
and value references). Where none occurs, a value as long as its shortest encoding is in it;
where one does, only a re-encoding can tell."""
_INT_MIN = -0x10000000000000000
_INT_END = 0x10000000000000000


class _Outside(Exception):
    pass


def _head(n):
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


def _shortest_len(v, depth):
    """Length of v's deterministic encoding, or -1 where only a re-encoding can tell (maps);
    _Outside for a value outside the protocol's subset or nesting deeper than MAX_DEPTH."""
    t = type(v)
    if t is int:
        if not _INT_MIN <= v < _INT_END:
            raise _Outside("integer beyond 64 bits (a bignum tag)")
        return _head(v if v >= 0 else -1 - v)
    if t is bytes:
        return _head(len(v)) + len(v)
    if t is str:
        n = len(v.encode())
        return _head(n) + n
    if v is None or t is bool:
        return 1
    if t is list or t is dict:
        if depth >= MAX_DEPTH:
            raise _Outside("nesting deeper than %d" % MAX_DEPTH)
        if t is dict:
            for k in v:
                tk = type(k)
                if tk is not int and tk is not str:
                    raise _Outside("map key of type %s" % tk.__name__)
                _shortest_len(k, depth + 1)
                _shortest_len(v[k], depth + 1)
            return -1
        total = _head(len(v))
        exact = True
        for x in v:
            n = _shortest_len(x, depth + 1)
            if n < 0:
                exact = False
            total += n
        return total if exact else -1
    raise _Outside("%s (not in the protocol's CBOR subset)" % t.__name__)


def _payload_len(v):
    # _shortest_len with the common case, a non-negative int in a top-level array, inlined
    if type(v) is not list:
        return _shortest_len(v, 0)
    total = _head(len(v))
    exact = True
    for x in v:
        if type(x) is int and 0 <= x < 0x100000000:
            total += 1 if x < 24 else 2 if x < 0x100 else 3 if x < 0x10000 else 5
        else:
            n = _shortest_len(x, 1)
            if n < 0:
                exact = False
            total += n
    return total if exact else -1


def loads(payload):
    try:
        v = _loads(payload)
        n = _payload_len(v)
        if n >= 0 and _TAG_HEAD(payload) is None:
            same = n == len(payload)
        else:
            same = _dumps(v, canonical=True) == payload
    except _Outside as e:
        raise CborError("outside the protocol's CBOR subset: %s" % e) from None
    except Exception as e:
        raise CborError(str(e)) from None
    if not same:
        raise CborError("not in deterministic encoding (or outside the protocol's CBOR subset)")
    return v


# -- the gateway's receive path, fused --------------------------------------------------------------

_LEAD = b"\x84\x43\xa1\x01\x04\xa2\x04"
_HEADS = cose._HEADS
_AAD_DIR = (b"\x84\x01\x00", b"\x84\x01\x01")
_MAX_KID = cose.MAX_KID
_TAG_LEN = cose.TAG_LEN
_PREFIX = cose._MAC0_PREFIX
_from_bytes = int.from_bytes


def _builder(name, fields):
    """v -> {"type": name, field: v[i], ...} as one dict display: a third of dict(zip(names, v))'s time."""
    items = ", ".join("%r: v[%d]" % (f[0], i + 1) for i, f in enumerate(fields))
    return eval("lambda v: {'type': %r, %s}" % (name, items))  # noqa: S307 - names from messages.SCHEMAS only


_U, _I, _N, _B, _T, _Y, _W = messages.U, messages.I, messages.N, messages.B, messages.T, messages.Y, messages.W
_BOTH = messages.BOTH
_HEAD_FORMS = ((24, 1, 0), (0x100, 2, 24), (0x10000, 3, 25), (0x100000000, 5, 26), (1 << 64, 9, 27))
"""(values below, item length, additional information) of CBOR's head forms, shortest first."""


def _int_field(i, kind, lo, hi):
    """Source checking v[i] (an integer field) against its range and its head at payload[pos]."""
    out = ["    x = v[%d]" % i, "    if type(x) is int:", "        if x < %d or x > %d:" % (lo, hi),
           "            return None"]
    if lo < 0:
        out += ["        m = 0", "        if x < 0:", "            m = 0x20", "            x = -1 - x"]
        top = max(hi, -1 - lo)
    else:
        top = hi
    head = "m | " if lo < 0 else ""
    below = 0
    for end, size, info in _HEAD_FORMS:
        last = top < end
        cond = "        else:" if last and below else "        %s x < %d:" % ("elif" if below else "if", end)
        h = ("%sx" % head) if info == 0 else ("%s%d" % (head, info) if lo < 0 else "%d" % info)
        out += [cond, "            if payload[pos] != %s:" % h, "                return None",
                "            pos += %d" % size]
        below = end
        if last:
            break
    if kind == _N:
        out += ["    elif x is None:", "        if payload[pos] != 0xF6:", "            return None", "        pos += 1"]
    out += ["    else:", "        return None"]
    return out


def _checker(code, name, fields):
    """A function (v, payload) -> True when payload is the deterministic encoding of v, a message of this
    type in range; None when only the portable path can tell (or name the error).

    Unrolled per message type from its schema, with its bounds as constants: one walk over the
    layout of the deterministic encoding, comparing the byte where each item's head would be
    with that head (major type and length form), and the end of the last item with the end of
    the payload. Then the payload is that encoding, item by item: a tag, a longer head, an
    indefinite length or trailing bytes would put another byte at some head, so no re-encoding
    and no scan of the data bytes (where tag-like values are common) is needed."""
    n = len(fields) + 1
    src = ["def check(v, payload):", "  try:"]
    body = ["    if payload[0] != %d or payload[1] != %d:" % (0x80 + n, code if code < 24 else 0x18),
            "        return None"]
    if code >= 24:
        body += ["    if payload[2] != %d:" % code, "        return None"]
    body += ["    pos = %d" % (2 if code < 24 else 3)]
    for i, (fname, kind, lo, hi) in enumerate(fields, 1):
        if kind in (_U, _I, _N):
            body += _int_field(i, kind, lo, hi)
        elif kind == _B:
            body += ["    x = v[%d]" % i, "    if type(x) is not bool or payload[pos] != (0xF5 if x else 0xF4):",
                     "        return None", "    pos += 1"]
        else:
            body += ["    pos = _other(%r, %d, %d, %d, v[%d], payload, pos)" % (name, kind, lo, hi, i),
                     "    if pos < 0:", "        return None"]
    body += ["    return True if pos == len(payload) else None"]
    src += ["  " + ln for ln in body]
    src += ["  except IndexError:  # the payload is shorter than the value's shortest encoding", "    return None"]
    ns = {"_other": _other}
    exec("\n".join(src), ns)  # noqa: S102 - source built from messages.SCHEMAS only
    return ns["check"]


def _other(name, kind, lo, hi, x, payload, pos):
    """A byte or text string or curfew windows at payload[pos]: the position after it, or -1."""
    tx = type(x)
    if (tx is bytes and kind == _Y) or (tx is str and kind == _T):
        try:
            messages._check(name, ("", kind, lo, hi), x)
        except Exception:  # noqa: BLE001 - the portable path names it
            return -1
        m = 0x40 if tx is bytes else 0x60
        a = len(x) if tx is bytes else len(x.encode())
        for end, size, info in _HEAD_FORMS:
            if a < end:
                if payload[pos] != m | (a if info == 0 else info):
                    return -1
                return pos + size + a
    if tx is list and kind == _W:
        try:
            messages._check(name, ("", kind, lo, hi), x)
            n = _shortest_len(x, 1)
        except Exception:  # noqa: BLE001
            return -1
        if _TAG_HEAD(payload) is not None:  # inside a nested array only a re-encoding can tell
            return -1
        return pos + n
    return -1


def _validators():
    """Per message code: (name, direction, dict builder, array length, checker); maps excluded."""
    out = {}
    for code, (name, d, fields) in messages.SCHEMAS.items():
        if any(f[1] == messages.C for f in fields):
            continue
        out[code] = (name, d, _builder(name, fields), len(fields) + 1, _checker(code, name, fields))
    return out


_SCHEMAS = _validators()


def _message(payload, direction):
    """messages.decode(payload, direction, loads) for the common case, None where only it can tell:
    an in-range message whose payload is its deterministic encoding (see _checker). Anything
    else (an error to name, a map) goes the portable way, so every refusal is the portable
    path's, in its order."""
    try:
        v = _loads(payload)
    except Exception:  # noqa: BLE001 - the portable path names it
        return None
    if type(v) is not list or not v or type(v[0]) is not int:
        return None
    s = _SCHEMAS.get(v[0])
    if s is None:
        return None
    name, d, build, n, check = s
    if len(v) != n or (direction is not None and d != _BOTH and d != direction) or check(v, payload) is None:
        return None
    return build(v)


def open_envelope(envelope, direction, mac_for, window_for=None):
    """protocol.codec.open_envelope with protocol.cpython.loads, fused for the gateway (CPython only).

    The same checks in the same order (SPEC section 7: layout, key, tag, replay window,
    payload) and the same typed errors: a frame laid out as cose.seal writes it, with a
    payload the one-pass check accepts, is opened here; everything else is handed to the
    portable functions, which name what is wrong. The Mac's precomputed hash states
    (key pad, then key pad and MAC structure lead per kid) are copied per message.
    """
    env = envelope
    n = len(env)
    if n < 18 or env[:7] != _LEAD:
        return codec.open_envelope(envelope, direction, mac_for, window_for, loads)
    k = env[7] - 0x40
    i = 8 + k
    if not 1 <= k <= _MAX_KID or env[i] != 0x06:
        return codec.open_envelope(envelope, direction, mac_for, window_for, loads)
    p = env[i + 1] - 0x40
    j = i + 2 + p
    if not 1 <= p <= 4 or j >= n or (p > 1 and env[i + 2] == 0):
        return codec.open_envelope(envelope, direction, mac_for, window_for, loads)
    m = env[j] - 0x40
    if 0 <= m < 24:
        j += 1
    elif m == 24 and j + 1 < n and env[j + 1] >= 24:
        m = env[j + 1]
        j += 2
    else:
        return codec.open_envelope(envelope, direction, mac_for, window_for, loads)
    e = j + m
    if e + 9 != n or env[e] != 0x48:
        return codec.open_envelope(envelope, direction, mac_for, window_for, loads)
    kid = env[8:i]
    mac = mac_for(kid)
    if mac is None:
        raise UnknownKeyError("no key for kid %r" % (kid,))
    inner = mac._inner
    if inner is None:
        return codec.open_envelope(envelope, direction, mac_for, window_for, loads)
    key = (direction, kid, p)
    st = mac._lead.get(key)
    if st is None:
        st = inner.copy()
        st.update(b"".join((_PREFIX, _HEADS[5 + k + p], _AAD_DIR[1 if direction else 0], _HEADS[k], kid, _HEADS[p])))
        if len(mac._lead) < 32:
            mac._lead[key] = st
    st = st.copy()
    st.update(env[i + 2 : e])  # Partial IV, payload head and payload lie side by side, as in the MAC structure
    o = mac._outer.copy()
    o.update(st.digest())
    if not _ct_equal(o.digest()[:_TAG_LEN], env[e + 1 :]):
        raise TagError("tag does not verify for kid %r" % (kid,))
    seq = _from_bytes(env[i + 2 : i + 2 + p], "big")
    w = window_for(kid) if window_for is not None else None
    payload = env[j:e]
    try:
        if w is not None:
            top = w.top
            if seq > top and type(w) is ReplayWindow:  # ReplayWindow.accept's common case: a newer number
                shift = seq - top
                w.bits = ((w.bits << shift) | 1) & 0xFFFFFFFF if shift < WINDOW else 1
                w.top = seq
            else:
                w.accept(seq)
        msg = _message(payload, direction)
        if msg is None:
            msg = messages.decode(payload, direction, loads)
    except ProtocolError as err:
        err.kid = kid
        err.seq = seq
        raise
    return codec.Received(kid, seq, msg)


class Deframer(_Deframer):
    """protocol.framing.Deframer with its common case in C: whole frames split out of a read at once.

    Yields the same (envelope, error) pairs for any stream and chunking: a frame whose COBS or
    CRC fails, and every partial or oversized frame, goes through the portable code.
    """

    def feed(self, data):
        z = data.rfind(b"\x00")
        if z < 0:
            yield from _Deframer.feed(self, data)
            return
        start = 0
        if self._n or self._overflow:  # finish the held frame the portable way
            start = data.find(b"\x00") + 1
            yield from _Deframer.feed(self, data[:start])
        if start <= z:
            big = self._max
            for part in data[start:z].split(b"\x00"):
                if not part:
                    continue
                if len(part) >= big:
                    yield None, OversizeError("%d bytes without a delimiter exceed %d" % (len(part) + 1, big))
                    continue
                if len(part) < MAX_FRAME:
                    try:
                        body = _cobs.decode(part)
                    except _cobs.DecodeError:
                        body = b""
                    if len(body) >= 3 and not crc_hqx(body, 0xFFFF):  # CRC over a body and its CRC is 0
                        yield body[:-2], None
                        continue
                try:
                    yield decode_frame(part), None
                except FrameError as e:
                    yield None, e
        if z + 1 < len(data):
            yield from _Deframer.feed(self, data[z + 1:])
