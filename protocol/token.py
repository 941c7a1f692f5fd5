"""Locker access tokens: what a booking system issues and a locker checks offline.

    token = [body: bstr .cbor [locker: tstr, comp: uint, not_before: uint, not_after: uint, id: uint],
             tag: bstr .size 8]

The tag is HMAC-SHA256/64 with the locker's booking key over "park-token-v1"
followed by the body bytes as received. The locker needs no network to
decide; it remembers used ids until they expire.
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from protocol import cbor
from protocol.cose import Mac, ct_equal
from protocol.errors import CborError, TokenError

_CONTEXT = const(b"park-token-v1")
_MAX_TOKEN = const(64)


def issue(key, locker, comp, not_before, not_after, token_id):
    body = cbor.dumps([locker, comp, not_before, not_after, token_id])
    return cbor.dumps([body, Mac(key).digest(_CONTEXT + body)[:8]])


def parse(raw):
    """Structure only: returns (body, (locker, comp, nbf, exp, id), tag) or raises TokenError('malformed')."""
    if not isinstance(raw, (bytes, bytearray)) or len(raw) > _MAX_TOKEN:
        raise TokenError("malformed", "token must be bytes, at most %d" % _MAX_TOKEN)
    try:
        v = cbor.loads(raw)
        if type(v) is not list or len(v) != 2 or type(v[0]) is not bytes or type(v[1]) is not bytes:
            raise TokenError("malformed", "token must be [body bstr, tag bstr]")
        body, tag = v
        f = cbor.loads(body)
    except CborError as e:
        raise TokenError("malformed", str(e))
    if len(tag) != 8 or type(f) is not list or len(f) != 5 or type(f[0]) is not str:
        raise TokenError("malformed", "body must be [locker, comp, not_before, not_after, id]")
    for x in f[1:]:
        if type(x) is not int or x < 0:
            raise TokenError("malformed", "token fields must be unsigned integers")
    if f[4] > 0xFFFFFFFF or f[1] > 32:
        raise TokenError("malformed", "token id or compartment out of range")
    return body, f, tag


def verify(mac, raw, locker_id, comp, now):
    """Return (token id, not_after) if the token opens `comp` of `locker_id` at `now`; else raise TokenError.

    The tag is checked first, so a forged token reveals nothing else. Single use
    is the caller's job: it keeps used ids until their not_after.
    """
    body, f, tag = parse(raw)
    if not ct_equal(mac.digest(_CONTEXT + body)[:8], tag):
        raise TokenError("forged")
    locker, tcomp, nbf, exp, tid = f
    if locker != locker_id:
        raise TokenError("wrong_locker")
    if tcomp != comp:
        raise TokenError("wrong_compartment")
    if now < nbf:
        raise TokenError("not_yet_valid")
    if now > exp:
        raise TokenError("expired")
    return tid, exp
