"""CPython-only accelerators for the gateway's hot path; never deployed to a device.

`loads` decodes a payload with cbor2 (a Rust core) and keeps the pure decoder's
strictness: a payload is accepted only in the one (deterministic) encoding that
protocol.cbor accepts. For the usual payload, an array of integers, strings and
null, that is the case exactly when its length equals the length of the
shortest encoding of the decoded value, which is cheaper to compute than a
re-encoding; anything else (maps, floats, tags) is re-encoded and compared.
Property tests (tests/protocol/test_properties.py) check that both decoders agree.
"""

import cbor2

from protocol.errors import CborError

_loads = cbor2.loads
_dumps = cbor2.dumps


def _head(n):
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


def _shortest_len(v):
    """Length of v's deterministic encoding, or -1 where only a re-encoding can tell."""
    t = type(v)
    if t is int:
        return _head(v if v >= 0 else -1 - v) if -0x10000000000000000 <= v < 0x10000000000000000 else -1
    if t is bytes:
        return _head(len(v)) + len(v)
    if t is str:
        n = len(v.encode())
        return _head(n) + n
    if v is None or t is bool:
        return 1
    if t is list:
        total = _head(len(v))
        for x in v:
            n = _shortest_len(x)
            if n < 0:
                return -1
            total += n
        return total
    return -1


def _payload_len(v):
    # _shortest_len with the common case, a non-negative int in a top-level array, inlined
    if type(v) is not list:
        return _shortest_len(v)
    total = _head(len(v))
    for x in v:
        if type(x) is int and 0 <= x < 0x100000000:
            total += 1 if x < 24 else 2 if x < 0x100 else 3 if x < 0x10000 else 5
        else:
            n = _shortest_len(x)
            if n < 0:
                return -1
            total += n
    return total


def loads(payload):
    try:
        v = _loads(payload)
        n = _payload_len(v)
        same = n == len(payload) if n >= 0 else _dumps(v, canonical=True) == payload
    except Exception as e:
        raise CborError(str(e)) from None
    if not same:
        raise CborError("not in deterministic encoding (or outside the protocol's CBOR subset)")
    return v
