"""Classify hostile inputs the same way in both VMs, so their outcomes can be compared.

A case is (layer, bytes): "stream" goes through the Deframer, "envelope"
skips framing, "payload" is sealed with the test key first so the message
layer is reached. Each outcome is "ok:<cbor hex of the message>" or
"err:<ProtocolError code>"; any other exception escapes and fails the run.
"""

import binascii

from protocol import cbor, codec, cose, framing
from protocol.errors import ProtocolError
from protocol.replay import ReplayWindow

KEY = b"fuzz-key-0123456789abcdef-fuzz!!"
KID = b"c001"


def _open(env, mac, window, loads):
    try:
        r = codec.open_envelope(env, cose.UP, lambda k: mac if k == KID else None, lambda k: window, loads)
    except ProtocolError as e:
        return "err:" + e.code
    return "ok:" + binascii.hexlify(cbor.dumps(r.msg)).decode()


def outcomes(cases, loads=None):
    mac = cose.Mac(KEY)
    out = []
    for layer, data in cases:
        window = ReplayWindow()
        if layer == "stream":
            res = []
            for env, err in framing.Deframer().feed(data):
                res.append("err:" + err.code if err is not None else _open(env, mac, window, loads))
            out.append("|".join(res))
        elif layer == "envelope":
            out.append(_open(data, mac, window, loads))
        else:
            out.append(_open(cose.seal(mac, cose.UP, KID, 1, data), mac, window, loads))
    return out
