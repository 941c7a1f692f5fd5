"""CPython-only accelerators for the gateway's hot path; never deployed to a device.

`loads` decodes a payload with cbor2 (a Rust core) and keeps the pure decoder's
strictness by re-encoding deterministically and comparing: a payload is
accepted only in the one encoding protocol.cbor accepts. Property tests
(tests/protocol/test_properties.py) check that both decoders agree.
"""

import cbor2

from protocol.errors import CborError

_loads = cbor2.loads
_dumps = cbor2.dumps


def loads(payload):
    try:
        v = _loads(payload)
        same = _dumps(v, canonical=True) == payload
    except Exception as e:
        raise CborError(str(e)) from None
    if not same:
        raise CborError("not in deterministic encoding (or outside the protocol's CBOR subset)")
    return v
