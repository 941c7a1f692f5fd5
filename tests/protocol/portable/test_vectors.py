"""Golden vectors: every valid one re-encodes byte for byte and decodes; every invalid one fails with its error.

Runs unchanged under CPython (pytest) and inside MicroPython (tests/protocol/test_micropython.py).
"""

from protocol import codec, cose, framing, messages
from protocol.errors import ProtocolError
from protocol.replay import ReplayWindow
from vectors_io import from_json, load_all, schemas, unhex

DIRS = {"up": cose.UP, "down": cose.DOWN}
_VECTORS = load_all()


def _process(v, frame_hex, window):
    mac = cose.Mac(unhex(v["key_hex"]))
    kid = v["kid"].encode()

    def mac_for(k):
        return mac if k == kid else None

    out = []
    for env, err in framing.Deframer().feed(unhex(frame_hex)):
        if err is not None:
            raise err
        out.append(codec.open_envelope(env, DIRS[v["direction"]], mac_for, lambda k: window))
    return out


def test_vector_set_is_complete():
    names = [v["name"] for v in _VECTORS]
    valid = [v for v in _VECTORS if v["valid"]]
    assert len(valid) >= 20 and len(_VECTORS) - len(valid) >= 20
    seen = {}
    for v in valid:
        seen[v["decoded"]["type"] + "/" + v["direction"]] = 1
    table = schemas()
    for code in table:
        name, d, _ = table[code]
        dirs = ("up", "down") if d == messages.BOTH else (("up",) if d == messages.UP else ("down",))
        for dn in dirs:
            assert name + "/" + dn in seen, "no vector for " + name + "/" + dn
    assert len(set(names)) == len(names)


def test_valid_vectors_encode_byte_for_byte():
    for v in _VECTORS:
        if not v["valid"]:
            continue
        msg = from_json(v["decoded"], v["bytes_fields"])
        mac = cose.Mac(unhex(v["key_hex"]))
        d = DIRS[v["direction"]]
        kid = v["kid"].encode()
        assert messages.encode(msg) == unhex(v["payload_hex"]), v["name"]
        assert cose.external_aad(d, kid, v["seq"]) == unhex(v["external_aad_hex"]), v["name"]
        assert codec.pack(mac, d, kid, v["seq"], msg) == unhex(v["frame_hex"]), v["name"]
        assert len(unhex(v["frame_hex"])) == v["frame_len"]


def test_valid_vectors_decode():
    for v in _VECTORS:
        if not v["valid"]:
            continue
        got = _process(v, v["frame_hex"], ReplayWindow())
        assert len(got) == 1, v["name"]
        r = got[0]
        assert r.kid == v["kid"].encode() and r.seq == v["seq"], v["name"]
        assert r.msg == from_json(v["decoded"], v["bytes_fields"]), v["name"]


def test_invalid_vectors_fail_with_their_error():
    for v in _VECTORS:
        if v["valid"]:
            continue
        window = ReplayWindow()
        for pre in v.get("preceding_frames_hex", []):
            _process(v, pre, window)
        try:
            _process(v, v["frame_hex"], window)
        except ProtocolError as e:
            assert e.code == v["error"], v["name"] + ": got " + e.code + " (" + str(e) + ")"
        else:
            raise AssertionError(v["name"] + ": accepted")


def test_uplink_frames_fit_lorawan_dr0():
    for v in _VECTORS:
        if v["valid"] and v["direction"] == "up":
            assert v["frame_len"] <= 51, v["name"]
            if v["decoded"]["type"] == "fill":
                assert v["frame_len"] <= 40, v["name"]
