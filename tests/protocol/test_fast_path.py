"""issue 13 item 3: the gateway's fused receive path (protocol.cpython.open_envelope) has the
portable path's outcome for every input: the same message, or the same typed error with the
same kid and sequence number, and the same replay window afterwards.
"""

import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec, cose, framing, messages
from protocol import cpython as fast
from protocol.errors import ProtocolError
from protocol.replay import ReplayWindow

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("test_properties_cases", Path(__file__).with_name("test_properties.py"))
_props = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_props)
CASES, KEY, KID, MESSAGES = _props.CASES, _props.KEY, _props.KID, _props.MESSAGES
VECTORS = [json.loads(p.read_text()) for p in sorted((ROOT / "protocol" / "vectors").glob("*.json"))]
DIRS = {"up": cose.UP, "down": cose.DOWN}


def _outcome(opener, env, direction, mac_for, window):
    """What a receiver learns: the message, or the error's type, code, kid and seq; then the window."""
    try:
        r = opener(env, direction, mac_for, lambda k: window)
        got = ("ok", r.kid, r.seq, r.msg)
    except ProtocolError as e:
        got = ("err", type(e), e.code, getattr(e, "kid", None), getattr(e, "seq", None),
               getattr(e, "field", None))
    return got, (window.top, window.bits)


def _portable(env, direction, mac_for, window_for):
    return codec.open_envelope(env, direction, mac_for, window_for, fast.loads)


def _both(env, direction, mac_for, before=()):
    out = []
    for opener in (_portable, fast.open_envelope):
        w = ReplayWindow()
        for pre in before:
            opener(pre, direction, mac_for, lambda k: w)
        out.append(_outcome(opener, env, direction, mac_for, w))
    return out


def _envelopes(frame_hex):
    return [env for env, err in framing.Deframer().feed(bytes.fromhex(frame_hex)) if err is None]


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_golden_vectors_have_identical_outcomes(v):
    mac = cose.Mac(bytes.fromhex(v["key_hex"]))
    kid = v["kid"].encode()
    before = [e for h in v.get("preceding_frames_hex", []) for e in _envelopes(h)]
    for env in _envelopes(v["frame_hex"]):
        portable, fused = _both(env, DIRS[v["direction"]], lambda k: mac if k == kid else None, before)
        assert portable == fused
        assert fused[0][0] == ("ok" if v["valid"] else "err")
        if not v["valid"]:
            assert fused[0][2] == v["error"]


@settings(max_examples=3000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(CASES)
def test_fuzz_corpus_has_identical_outcomes(case):
    """The property suite's hostile inputs (streams, mutated frames, envelopes, payloads)."""
    layer, data = case
    mac = cose.Mac(KEY)

    def mac_for(k):
        return mac if k == KID else None

    if layer == "stream":
        envs = _envelopes(data.hex())
    elif layer == "envelope":
        envs = [data]
    else:
        envs = [cose.seal(mac, cose.UP, KID, 1, data)]
    for env in envs:
        for direction in (cose.UP, cose.DOWN):
            portable, fused = _both(env, direction, mac_for)
            assert portable == fused, env.hex()


@settings(max_examples=1500, deadline=None)
@given(MESSAGES, st.binary(min_size=1, max_size=8), st.integers(0, cose.MAX_SEQ), st.sampled_from([cose.UP, cose.DOWN]),
       st.sampled_from([cose.UP, cose.DOWN]))
def test_every_message_either_way_has_identical_outcomes(msg, kid, seq, sent, received):
    mac = cose.Mac(KEY)
    try:
        env = cose.seal(mac, sent, kid, seq, messages.encode(msg))
    except ProtocolError:
        return
    for mac_for in (lambda k: mac, lambda k: None, lambda k: cose.Mac(KEY[::-1])):
        portable, fused = _both(env, received, mac_for)
        assert portable == fused


def test_the_fused_path_takes_the_common_frames_itself(monkeypatch):
    """Not a fallback in disguise: an ordinary frame never reaches the portable functions."""
    mac = cose.Mac(KEY)
    env = cose.seal(mac, cose.UP, KID, 7, messages.encode({"type": "fill", "fill": 73, "temp": -3, "batt": None}))

    def portable(*a, **k):
        raise AssertionError("portable path used")

    monkeypatch.setattr(codec, "open_envelope", portable)
    monkeypatch.setattr(messages, "decode", portable)
    r = fast.open_envelope(env, cose.UP, lambda k: mac, lambda k: ReplayWindow())
    assert (r.kid, r.seq, r.msg) == (KID, 7, {"type": "fill", "fill": 73, "temp": -3, "batt": None})


@pytest.mark.parametrize("msg", [
    {"type": "fill", "fill": 100, "temp": -40, "batt": 0xD8},           # 18 d8: a tag-head value as data
    {"type": "heartbeat", "uptime": 0xC2C3, "heap": 0xDB, "boots": 0xC2, "status": 0xDA, "fw": 0xD9C2,
     "batt": None, "dropped": 0xC3},
    {"type": "hello", "role": 2, "fw": 10203, "caps": 0xD8D9, "nonce": b"\xc2\xc3\xd8\xd9\xda\xdb\x00\x01"},
    {"type": "nack", "ref": 0xDBDBDBDB, "code": 3, "field": "\u00d8\u00c2"}])
def test_data_bytes_that_look_like_tags_stay_on_the_fused_path(monkeypatch, msg):
    """Values whose bytes are 0xc2/0xc3/0xd8-0xdb are common (a battery level of 216, a nonce):
    only the byte at an item's head can be a tag, so these frames are opened without a fallback."""
    mac = cose.Mac(KEY)
    env = cose.seal(mac, cose.UP, KID, 7, messages.encode(msg))

    def portable(*a, **k):
        raise AssertionError("portable path used")

    monkeypatch.setattr(codec, "open_envelope", portable)
    monkeypatch.setattr(messages, "decode", portable)
    assert fast.open_envelope(env, cose.UP, lambda k: mac, lambda k: ReplayWindow()).msg == msg


@pytest.mark.parametrize("payload_hex", [
    "8410c243010000f6f6",          # fill 65536 as a bignum: as long as its shortest form (out of range anyway)
    "82 08 c2 43 010000".replace(" ", ""),              # ack ref 65536 as a bignum, 5 bytes like 1a00010000
    "82 08 d8 02 46 010000000000".replace(" ", ""),     # ack ref 2**40 under a long tag head: 9 bytes like 1b...
    "82 08 1a 00000005".replace(" ", ""),               # ack ref 5 with a 4-byte head
    "82 08 05 00".replace(" ", ""),                     # a trailing byte
    "9f 08 05 ff".replace(" ", ""),                     # an indefinite-length array
    "82 18 08 05".replace(" ", ""),                     # the type code with a longer head
    "83 07 05 00".replace(" ", "")[:6],                 # an array shorter than its head says
])
def test_non_deterministic_payloads_are_refused_as_the_portable_path_refuses_them(payload_hex):
    mac = cose.Mac(KEY)
    env = cose.seal(mac, cose.UP, KID, 9, bytes.fromhex(payload_hex))
    portable, fused = _both(env, cose.UP, lambda k: mac)
    assert portable == fused
    assert fused[0][0] == "err"


def test_a_forged_frame_moves_no_window():
    mac = cose.Mac(KEY)
    env = bytearray(cose.seal(mac, cose.UP, KID, 5, messages.encode({"type": "ack", "ref": 1})))
    env[-1] ^= 1
    w = ReplayWindow()
    with pytest.raises(ProtocolError) as e:
        fast.open_envelope(bytes(env), cose.UP, lambda k: mac, lambda k: w)
    assert e.value.code == "bad_tag" and (w.top, w.bits) == (-1, 0)


def _deframed(deframer, chunks):
    return [(env, None if err is None else (type(err), str(err))) for c in chunks for env, err in deframer.feed(c)]


@settings(max_examples=1500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.sampled_from(_props.VALID_FRAMES) | _props.mutated(_props.VALID_FRAMES) | st.binary(max_size=300),
                max_size=6).map(b"".join),
       st.lists(st.integers(1, 400), max_size=6), st.sampled_from([framing.MAX_FRAME, 64, 400]))
def test_the_host_deframer_yields_what_the_portable_one_does(stream, cuts, max_frame):
    """Any stream, cut into any chunks: the same envelopes and the same errors, in order."""
    chunks, o = [], 0
    for c in cuts:
        chunks.append(stream[o:o + c])
        o += c
    chunks.append(stream[o:])
    assert _deframed(fast.Deframer(max_frame), chunks) == _deframed(framing.Deframer(max_frame), chunks)
