"""The envelope: an untagged COSE_Mac0 (RFC 9052) with HMAC 256/64 (alg 4).

    COSE_Mac0 = [protected: bstr .cbor {1: 4}, unprotected: {4: kid, 6: piv}, payload: bstr, tag: bstr .size 8]

kid and Partial IV sit in the unprotected header, which COSE does not MAC, so
both are bound through external_aad together with the direction and the
protocol version; a frame cannot be replayed under another id, sequence number
or direction (reflection). The tag is computed over the bytes as received,
never over a re-encoding.
"""

import hashlib
import sys

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from protocol import cbor
from protocol.codes import DOWN, MAX_KID, UP  # noqa: F401  (cose.UP/DOWN: the direction in external_aad)
from protocol.errors import EnvelopeError, TagError

# Private consts are folded where used and never interned on a device; the host's public names
# for them (TAG_LEN, MAX_SEQ, PROTECTED, ...) come from protocol.cose_host.
_ALG_HMAC_256_64 = const(4)
_PROTECTED = const(b"\xa1\x01\x04")
_TAG_LEN = const(8)
_MAX_SEQ = const(0xFFFFFFFF)
_MAC0_PREFIX = const(b"\x84\x64MAC0\x43\xa1\x01\x04")
_LEAD = const(b"\x84\x43\xa1\x01\x04\xa2\x04")


def _bhead(n):
    if n < 24:
        return bytes((0x40 | n,))
    if n < 256:
        return bytes((0x58, n))
    return bytes((0x59, n >> 8, n & 0xFF))


def piv_bytes(seq):
    """Partial IV: the sequence number big-endian without leading zeros (0 is one zero byte)."""
    if seq < 0 or seq > _MAX_SEQ:
        raise EnvelopeError("sequence number %d out of range" % seq)
    n = 1
    while seq >> (8 * n):
        n += 1
    return seq.to_bytes(n, "big")


def external_aad(direction, kid, seq):
    """CBOR [version, direction, kid, piv]: what binds the unprotected header to the tag."""
    piv = piv_bytes(seq)
    # the deterministic CBOR of [1, direction, kid, piv], written out
    return b"\x84\x01" + (b"\x01" if direction else b"\x00") + _bhead(len(kid)) + kid + _bhead(len(piv)) + piv


def ct_equal(a, b):
    """Compare two tags in time that does not depend on where they differ.

    MicroPython has no hmac.compare_digest; CPython's (in C) replaces this (protocol.cose_host).
    """
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


class Mac:
    """HMAC-SHA256 truncated to 64 bits for one key (RFC 2104 built on hashlib.sha256).

    MicroPython has no hmac module and no sha256.copy(): a device hashes the padded
    key per message. CPython's Mac (protocol.cose_host) copies hash states instead.
    """

    def __init__(self, key):
        if not isinstance(key, (bytes, bytearray)) or not 16 <= len(key) <= 64:
            raise ValueError("key must be 16 to 64 bytes")
        ik = bytearray(64)
        ok = bytearray(64)
        for i in range(64):
            k = key[i] if i < len(key) else 0
            ik[i] = k ^ 0x36
            ok[i] = k ^ 0x5C
        self._ik = bytes(ik)
        self._ok = bytes(ok)

    def __repr__(self):
        return "<Mac>"

    def digest(self, msg):
        h = hashlib.sha256(self._ik)
        h.update(msg)
        o = hashlib.sha256(self._ok)
        o.update(h.digest())
        return o.digest()

    def tag_piv(self, direction, kid, piv, payload):
        # [ "MAC0", protected, bstr([1, dir, kid, piv]), payload ] with every head written out
        return self.digest(b"".join((_MAC0_PREFIX, _bhead(5 + len(kid) + len(piv)),
                                     b"\x84\x01\x01" if direction else b"\x84\x01\x00", _bhead(len(kid)), kid,
                                     _bhead(len(piv)), piv, _bhead(len(payload)), payload)))[:_TAG_LEN]


def seal(mac, direction, kid, seq, payload):
    """Build the envelope bytes for an encoded payload."""
    if not 1 <= len(kid) <= MAX_KID:
        raise EnvelopeError("kid must be 1 to %d bytes" % MAX_KID)
    piv = piv_bytes(seq)
    t = mac.tag_piv(direction, kid, piv, payload)
    return (
        b"\x84\x43" + _PROTECTED + b"\xa2\x04" + _bhead(len(kid)) + kid + b"\x06" + _bhead(len(piv)) + piv
        + _bhead(len(payload)) + payload + b"\x48" + t
    )


class Envelope:
    """A parsed but not yet verified COSE_Mac0."""

    __slots__ = ("kid", "seq", "piv", "payload", "tag")

    def __init__(self, kid, piv, payload, tag):
        self.kid = kid
        self.piv = piv
        self.seq = int.from_bytes(piv, "big")
        self.payload = payload
        self.tag = tag

    def verify(self, mac, direction):
        """Raise TagError unless the tag is right for this key and direction."""
        want = mac.tag_piv(direction, self.kid, self.piv, self.payload)
        if not ct_equal(want, self.tag):
            raise TagError("tag does not verify for kid %r" % (self.kid,))


def parse(envelope):
    """Check the envelope's structure and return an Envelope; no key needed yet.

    Only the deterministic layout is accepted, sliced as seal() writes it: the hot path in both
    VMs, no CBOR decoder, no allocation but the fields. Anything else is decoded with the strict
    CBOR decoder just to say precisely what is wrong.
    """
    env = envelope
    n = len(env)
    while n >= 18 and env[:7] == _LEAD:  # one pass: each break means "not the deterministic layout"
        k = env[7] - 0x40
        i = 8 + k
        if not 1 <= k <= MAX_KID or env[i] != 0x06:
            break
        p = env[i + 1] - 0x40
        if not 1 <= p <= 4:
            break
        j = i + 2 + p
        piv = env[i + 2 : j]
        if (p > 1 and piv[0] == 0) or j >= n:
            break
        h = env[j]
        if h < 0x58:
            m = h - 0x40
            j += 1
        elif h == 0x58 and j + 1 < n and env[j + 1] >= 24:
            m = env[j + 1]
            j += 2
        else:
            break
        if m < 0 or j + m + 9 != n or env[j + m] != 0x48:
            break
        return Envelope(env[8:i], piv, env[j : j + m], env[j + m + 1 :])
    v = cbor.loads(envelope)
    if type(v) is not list or len(v) != 4:
        raise EnvelopeError("not a COSE_Mac0 array of 4")
    prot, unprot, payload, tag = v
    if type(prot) is not bytes or prot != _PROTECTED:
        raise EnvelopeError("protected header must be {1: 4} (HMAC 256/64)")
    if type(unprot) is not dict or len(unprot) != 2 or 4 not in unprot or 6 not in unprot:
        raise EnvelopeError("unprotected header must hold exactly kid (4) and Partial IV (6)")
    kid = unprot[4]
    piv = unprot[6]
    if type(kid) is not bytes or not 1 <= len(kid) <= MAX_KID:
        raise EnvelopeError("kid must be a bstr of 1 to %d bytes" % MAX_KID)
    if type(piv) is not bytes or not 1 <= len(piv) <= 4 or (len(piv) > 1 and piv[0] == 0):
        raise EnvelopeError("Partial IV must be 1 to 4 bytes without leading zeros")
    if type(payload) is not bytes:
        raise EnvelopeError("payload must be a bstr")
    if type(tag) is not bytes or len(tag) != _TAG_LEN:
        raise EnvelopeError("tag must be %d bytes" % _TAG_LEN)
    raise EnvelopeError("envelope is not in the deterministic layout")


if sys.implementation.name != "micropython":  # a device never loads the host's faster Mac nor its names
    from protocol.cose_host import *  # noqa: E402,F401,F403
