"""The host's half of protocol.cose: its public constants and a faster Mac; never on a device.

protocol.cose keeps these as private const() values (no interned names on a board) and takes
this module's names on CPython, so `cose.Mac`, `cose.TAG_LEN`, ... are what they always were.
"""

import hashlib
from hmac import compare_digest as ct_equal

from protocol import cose

__all__ = ("ALG_HMAC_256_64", "PROTECTED", "TAG_LEN", "MAX_SEQ", "Mac", "ct_equal", "mac_structure", "_HEADS")

# On CPython const() is the identity, so cose's private values are ordinary globals to read.
ALG_HMAC_256_64 = cose._ALG_HMAC_256_64
PROTECTED = cose._PROTECTED
TAG_LEN = cose._TAG_LEN
MAX_SEQ = cose._MAX_SEQ
_MAC0_PREFIX = cose._MAC0_PREFIX
_HEADS = [bytes((0x40 | n,)) for n in range(24)]
_bhead = cose._bhead


def mac_structure(aad, payload):
    """The MAC_structure bytes for an external_aad and a payload (what the tag is computed over)."""
    return _MAC0_PREFIX + _bhead(len(aad)) + aad + _bhead(len(payload)) + payload


class Mac(cose.Mac):
    """The same Mac with the padded key states hashed once and copied per message, which
    doubles throughput; the state after key pad and MAC structure lead is kept per
    (direction, kid, Partial IV length)."""

    def __init__(self, key):
        super().__init__(key)
        self._inner = hashlib.sha256(self._ik)
        self._outer = hashlib.sha256(self._ok)
        self._lead = {}

    def digest(self, msg):
        h = self._inner.copy()
        h.update(msg)
        o = self._outer.copy()
        o.update(h.digest())
        return o.digest()

    def tag_piv(self, direction, kid, piv, payload):
        k = len(kid)
        p = len(piv)
        key = (direction, kid, p)
        h = self._lead.get(key)
        if h is None:
            h = self._inner.copy()
            h.update(b"".join((_MAC0_PREFIX, _HEADS[5 + k + p], b"\x84\x01\x01" if direction else b"\x84\x01\x00",
                               _HEADS[k], kid, _HEADS[p])))
            if len(self._lead) < 32:
                self._lead[key] = h
        h = h.copy()
        h.update(piv + _bhead(len(payload)) + payload)
        o = self._outer.copy()
        o.update(h.digest())
        return o.digest()[:TAG_LEN]
