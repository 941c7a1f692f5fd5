"""From a message to a frame and back: messages -> envelope -> framing.

Both ends use these two functions; sessions (who acks what, retries, which key)
live in the firmware runtime and in gateway/session.py.
"""

from protocol import cose, framing, messages
from protocol.errors import ProtocolError, UnknownKeyError


def pack(mac, direction, kid, seq, msg):
    """The complete frame for `msg`, delimiter included."""
    return framing.encode_frame(cose.seal(mac, direction, kid, seq, messages.encode(msg)))


class Received:
    __slots__ = ("kid", "seq", "msg")

    def __init__(self, kid, seq, msg):
        self.kid = kid
        self.seq = seq
        self.msg = msg


def open_envelope(envelope, direction, mac_for, window_for=None, loads=None):
    """Authenticate and decode one envelope that arrived travelling `direction`.

    mac_for(kid) returns the peer's Mac or None; window_for(kid) its ReplayWindow or
    None. Order matters: tag before window (a forged frame must not move the
    window), window before payload (an authentic replay is refused unread), and the
    sequence number is consumed even if the payload then fails its schema, so the
    sender can be nacked. Errors raised after authentication carry .kid and .seq.
    """
    e = cose.parse(envelope)
    mac = mac_for(e.kid)
    if mac is None:
        raise UnknownKeyError("no key for kid %r" % (e.kid,))
    e.verify(mac, direction)
    w = window_for(e.kid) if window_for is not None else None
    try:
        if w is not None:
            w.accept(e.seq)
        msg = messages.decode(e.payload, direction, loads)
    except ProtocolError as err:
        err.kid = e.kid
        err.seq = e.seq
        raise
    return Received(e.kid, e.seq, msg)


def open_frame(frame, direction, mac_for, window_for=None, loads=None):
    return open_envelope(framing.decode_frame(frame), direction, mac_for, window_for, loads)
