"""CPython-only accelerators for the gateway's hot path; never deployed to a device.

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

import cbor2

from protocol.cbor import MAX_DEPTH
from protocol.errors import CborError

_loads = cbor2.loads
_dumps = cbor2.dumps
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
        same = n == len(payload) if n >= 0 else _dumps(v, canonical=True) == payload
    except _Outside as e:
        raise CborError("outside the protocol's CBOR subset: %s" % e) from None
    except Exception as e:
        raise CborError(str(e)) from None
    if not same:
        raise CborError("not in deterministic encoding (or outside the protocol's CBOR subset)")
    return v
