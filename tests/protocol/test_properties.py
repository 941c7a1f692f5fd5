"""Property tests (hypothesis): the pure codec and the cbor2 fast path agree, and
hostile input ends in a typed error, identically in CPython and MicroPython.
"""

import binascii
import importlib.util
import json
import os
import tracemalloc
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import mpvm
from protocol import cbor, codec, cose, framing, messages
from protocol import cpython as fast
from protocol.errors import CborError, ProtocolError

_spec = importlib.util.spec_from_file_location("fuzz_outcomes", Path(__file__).resolve().parent / "portable" / "fuzz_outcomes.py")
fuzz_outcomes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_outcomes)
KEY, KID, outcomes = fuzz_outcomes.KEY, fuzz_outcomes.KID, fuzz_outcomes.outcomes

ROOT = Path(__file__).resolve().parents[2]
FUZZ_CASES = int(os.environ.get("PARK_FUZZ_CASES", "3000"))

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)


def _field(f):
    name, kind, lo, hi = f
    if kind in (messages.U, messages.I):
        return st.integers(lo, hi)
    if kind == messages.N:
        return st.none() | st.integers(lo, hi)
    if kind == messages.B:
        return st.booleans()
    if kind == messages.T:
        return st.text(max_size=hi // 4)
    if kind == messages.Y:
        return st.binary(min_size=lo, max_size=hi)
    if kind == messages.W:
        return st.lists(st.tuples(st.integers(0, 1439), st.integers(0, 1439), st.integers(0, 100)).map(list),
                        max_size=hi)
    return st.dictionaries(st.text(min_size=1, max_size=3),
                           st.integers(-2 ** 31, 2 ** 32 - 1) | st.booleans() | st.text(max_size=8), max_size=5)


def _message(code):
    name, _, fields = messages.SCHEMAS[code]
    return st.fixed_dictionaries({f[0]: _field(f) for f in fields}).map(lambda d: dict(d, type=name))


MESSAGES = st.sampled_from(sorted(messages.SCHEMAS)).flatmap(_message)


@settings(max_examples=1500, deadline=None)
@given(MESSAGES)
def test_pure_and_cbor2_agree_on_every_message(msg):
    payload = messages.encode(msg)
    code = messages.TYPES[msg["type"]]
    as_list = [code] + [msg[f[0]] for f in messages.SCHEMAS[code][2]]
    assert cbor2.dumps(as_list, canonical=True) == payload
    assert cbor.loads(payload) == cbor2.loads(payload)
    assert messages.decode(payload) == msg
    assert messages.decode(payload, loads=fast.loads) == msg


def _extreme(f):
    """A field over its full legal range, its bounds drawn often (the largest encodings)."""
    name, kind, lo, hi = f
    if kind in (messages.U, messages.I, messages.N):
        ints = st.sampled_from([lo, hi]) | st.integers(lo, hi)
        return (st.none() | ints) if kind == messages.N else ints
    if kind == messages.T:  # up to hi bytes of UTF-8, multi-byte characters included
        return st.text(max_size=hi).filter(lambda t: len(t.encode()) <= hi) | st.just("x" * hi) | st.just("ä" * (hi // 2))
    return _field(f)


def _uplink(code):
    name, _, fields = messages.SCHEMAS[code]
    return st.fixed_dictionaries({f[0]: _extreme(f) for f in fields}).map(lambda d: dict(d, type=name))


UPLINK = st.sampled_from(sorted(c for c in messages.SCHEMAS if messages.SCHEMAS[c][1] != messages.DOWN)).flatmap(_uplink)


@settings(max_examples=3000, deadline=None)
@given(UPLINK, st.binary(min_size=1, max_size=8), st.integers(0, 2 ** 24 - 1) | st.just(2 ** 24 - 1))
def test_every_uplink_message_fits_lorawan_dr0_over_its_whole_life(msg, kid, seq):
    """issue 9 item 9: any legal uplink message, an id of up to 8 bytes and any sequence number
    below 2**24: the envelope (what a LoRaWAN uplink carries) is at most 51 bytes (SPEC 3, Size)."""
    payload = messages.encode(msg)
    assert len(payload) <= messages.UP_PAYLOAD_MAX
    env = cose.seal(cose.Mac(KEY), cose.UP, kid, seq, payload)
    assert len(env) <= 51, (msg, len(env))
    assert len(framing.encode_frame(env)) == len(env) + 4


def test_the_largest_uplink_messages_fit_exactly():
    """The worst case of each uplink type with an 8-byte id and sequence number 2**24 - 1."""
    worst = {
        "heartbeat": {"uptime": 0xFFFF, "heap": 255, "boots": 255, "status": 255, "fw": 999999, "batt": 255,
                      "dropped": 255},
        "access": {"eid": 2 ** 32 - 1, "t": 2 ** 32 - 1, "comp": 32, "result": 15, "token": 2 ** 32 - 1},
        "hello": {"role": 3, "fw": 999999, "caps": 0xFFFF, "nonce": b"\xff" * 8},
        "nack": {"ref": 2 ** 32 - 1, "code": 23, "field": "x" * messages.NACK_FIELD_MAX},
    }
    for name, fields in worst.items():
        env = cose.seal(cose.Mac(KEY), cose.UP, b"12345678", 2 ** 24 - 1, messages.encode(dict(fields, type=name)))
        assert len(env) == 51, name


def test_the_encoder_refuses_what_the_uplink_limit_cannot_carry():
    with pytest.raises(ProtocolError):
        messages.encode({"type": "heartbeat", "uptime": 86400, "heap": 101232, "boots": 7, "status": 20,
                         "fw": 10203, "batt": None, "dropped": 2})   # seconds and bytes: the old units
    with pytest.raises(ProtocolError):
        messages.encode({"type": "nack", "ref": 1, "code": 3, "field": "safe_retry_s"})
    with pytest.raises(ProtocolError):
        codec.pack(cose.Mac(KEY), cose.UP, b"c001", 2 ** 32, {"type": "ack", "ref": 1})


@settings(max_examples=500, deadline=None)
@given(MESSAGES, st.binary(min_size=1, max_size=8), st.integers(0, cose.MAX_SEQ), st.sampled_from([cose.UP, cose.DOWN]))
def test_frames_round_trip(msg, kid, seq, direction):
    if messages.direction_of(msg["type"]) not in (direction, messages.BOTH):
        return
    mac = cose.Mac(KEY)
    try:
        frame = codec.pack(mac, direction, kid, seq, msg)
    except ProtocolError as e:  # only a too-long message may fail
        assert e.code == "oversize"
        return
    assert len(frame) <= framing.MAX_FRAME
    for loads in (None, fast.loads):
        r = codec.open_frame(frame, direction, lambda k: mac, loads=loads)
        assert (r.kid, r.seq, r.msg) == (kid, seq, msg)


@settings(max_examples=1000, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-2 ** 64, 2 ** 64 - 1) | st.binary(max_size=20) | _text,
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.integers(-30, 30) | _text, c, max_size=4),
                    max_leaves=12))
def test_cbor_codecs_agree_both_ways(v):
    enc = cbor.dumps(v)
    assert enc == cbor2.dumps(v, canonical=True)
    assert cbor.loads(enc) == v == cbor2.loads(enc)
    assert fast.loads(enc) == v


def _valid_frames():
    mac = cose.Mac(KEY)
    out = []
    for i, code in enumerate(sorted(messages.SCHEMAS)):
        if messages.SCHEMAS[code][1] == messages.DOWN:
            continue
        name, _, fields = messages.SCHEMAS[code]
        msg = {"type": name}
        for f in fields:
            msg[f[0]] = {messages.B: True, messages.T: "x", messages.Y: b"12345678", messages.N: None,
                         messages.W: [], messages.C: {"a": 1}}.get(f[1], f[2])
        out.append(codec.pack(mac, cose.UP, KID, i, msg))
    return out


VALID_FRAMES = _valid_frames()


@st.composite
def mutated(draw, base):
    b = bytearray(draw(st.sampled_from(base)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        if op == 0:
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            del b[i]
        elif op == 2:
            b.insert(i, draw(st.integers(0, 255)))
        elif op == 3:
            del b[i:]
        else:
            b[i] = draw(st.sampled_from([0x00, 0x18, 0x1b, 0x5b, 0x9b, 0xbb, 0x9f, 0xc0, 0xf9, 0xff]))
    return bytes(b)


def _reframe(env):
    return env


CASES = st.one_of(
    st.tuples(st.just("stream"), st.binary(max_size=300)),
    st.tuples(st.just("stream"), mutated(VALID_FRAMES)),
    st.tuples(st.just("stream"), st.lists(st.sampled_from(VALID_FRAMES) | st.binary(max_size=20), max_size=4).map(b"".join)),
    st.tuples(st.just("envelope"), mutated([framing.decode_frame(f) for f in VALID_FRAMES])),
    st.tuples(st.just("payload"), mutated([cose.parse(framing.decode_frame(f)).payload for f in VALID_FRAMES])),
    st.tuples(st.just("payload"), st.binary(max_size=60)),
)


def _agree(pure, fastr):
    # One CBOR language (issue 9 item 10): the fast path refuses what the portable decoder
    # refuses, at the same layer, so every outcome is identical.
    return pure == fastr


def test_fuzz_identical_outcomes_in_cpython_and_micropython():
    cases = []

    @settings(max_examples=FUZZ_CASES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(CASES)
    def collect(case):
        cases.append(case)

    collect()
    assert len(cases) >= FUZZ_CASES * 0.9
    pure = outcomes(cases)
    fastr = outcomes(cases, loads=fast.loads)
    for c, p, f in zip(cases, pure, fastr):
        for a, b in zip(p.split("|"), f.split("|")):
            assert _agree(a, b), (c, p, f)
    errors = [o for o in pure if "err:" in o]
    assert len(errors) > len(cases) // 2  # the generator reaches the error paths
    reached = {e.split(":")[1] for o in pure for e in o.split("|") if e.startswith("err:")}
    assert {"cobs", "crc", "cbor", "envelope", "bad_tag", "schema"} <= reached, reached

    mpvm.ensure()
    data = json.dumps([[layer, binascii.hexlify(b).decode()] for layer, b in cases])
    tmp = ROOT / ".pytest_fuzz_cases.json"
    tmp.write_text(data)
    try:
        res = mpvm.run(file="/main.py", mounts={
            ROOT / "protocol": "/lib/protocol",
            Path(__file__).parent / "portable" / "fuzz_outcomes.py": "/lib/fuzz_outcomes.py",
            Path(__file__).parent / "mp_fuzz_main.py": "/main.py",
            tmp: "/cases.json"}, paths=["/lib"], timeout=max(600, FUZZ_CASES // 50)).check()
    finally:
        tmp.unlink()
    line = [x for x in res.stdout.splitlines() if x.startswith("@@OUTCOMES ")]
    assert line, res.stdout[-2000:]
    mp = json.loads(line[0][len("@@OUTCOMES "):])
    assert len(mp) == len(pure)
    for c, p, m in zip(cases, pure, mp):
        assert p == m, (c, p, m)


def _head(major, n, width=None):
    """A CBOR head; width forces a (possibly non-shortest) argument size: 0, 1, 2, 4 or 8 bytes."""
    if width is None:
        width = 0 if n < 24 else 1 if n < 0x100 else 2 if n < 0x10000 else 4 if n < 0x100000000 else 8
    if width == 0:
        return bytes([(major << 5) | n])
    return bytes([(major << 5) | {1: 24, 2: 25, 4: 26, 8: 27}[width]]) + n.to_bytes(width, "big")


@st.composite
def hostile_cbor(draw, depth=0):
    """CBOR items from the whole language, inside and outside the protocol's subset: floats
    (float16 NaN included), tags (24 and the ones cbor2 turns into plain values), undefined,
    simple values, indefinite lengths, non-shortest heads, bad UTF-8, deep nesting, odd map keys."""
    kind = draw(st.integers(0, 14 if depth < 9 else 8))
    if kind == 0:
        n = draw(st.integers(0, 2 ** 64 - 1))
        return _head(draw(st.sampled_from([0, 1])), n, draw(st.sampled_from([None, None, 1, 2, 4, 8]))
                     if n < 0x100 else None)
    if kind == 1:
        b = draw(st.binary(max_size=6))
        return _head(2, len(b)) + b
    if kind == 2:
        b = draw(st.sampled_from([b"ok", b"\xc3\xa4", b"\xff", b"\xed\xa0\x80", b""]))
        return _head(3, len(b)) + b
    if kind == 3:
        return draw(st.sampled_from([b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xf0", b"\xf8\x20", b"\xf8\x10",
                                     b"\xfc", b"\xff"]))
    if kind == 4:  # floats: float16 NaN, 0.0, infinity; float32; float64
        return draw(st.sampled_from([b"\xf9\x7e\x00", b"\xf9\x00\x00", b"\xf9\x7c\x00", b"\xfa\x3f\x80\x00\x00",
                                     b"\xfb" + bytes(8)]))
    if kind <= 8:
        return draw(st.sampled_from([b"\x00", b"\x17", b"\x20", b"\x40", b"\x60", b"\x80", b"\xa0"]))
    if kind == 9:  # a tag around an item
        tag = draw(st.sampled_from([0, 1, 2, 3, 24, 28, 29, 256, 25, 55799, 258]))
        return _head(6, tag) + draw(hostile_cbor(depth + 1))
    if kind in (10, 11):  # definite array
        items = draw(st.lists(hostile_cbor(depth + 1), max_size=3))
        return _head(4, len(items)) + b"".join(items)
    if kind == 12:  # map: keys of any kind, maybe unsorted or duplicate
        pairs = draw(st.lists(st.tuples(hostile_cbor(depth + 1), hostile_cbor(depth + 1)), max_size=3))
        return _head(5, len(pairs)) + b"".join(k + v for k, v in pairs)
    if kind == 13:  # indefinite array / byte string
        items = draw(st.lists(hostile_cbor(depth + 1), max_size=2))
        return draw(st.sampled_from([b"\x9f", b"\x5f"])) + b"".join(items) + b"\xff"
    nest = draw(st.integers(4, 9))  # nesting around the SPEC limit of 6
    return b"\x81" * nest + draw(hostile_cbor(depth + 1))


def _typed(v):
    """A value with its types spelled out (True == 1 in Python; the protocol tells them apart)."""
    if isinstance(v, list):
        return ["list", [_typed(x) for x in v]]
    if isinstance(v, dict):
        return ["map", sorted(([_typed(k), _typed(x)] for k, x in v.items()), key=repr)]
    return [type(v).__name__, v]


def _outcome(loads, payload):
    try:
        return "ok", _typed(loads(payload))
    except CborError:
        return "err", None


@settings(max_examples=FUZZ_CASES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(hostile_cbor(), st.binary(max_size=40),
                 st.lists(hostile_cbor(), min_size=1, max_size=4).map(lambda xs: _head(4, len(xs)) + b"".join(xs))))
def test_fast_and_portable_decoders_have_identical_outcomes(payload):
    """issue 9 item 10: protocol.cpython.loads refuses exactly what protocol.cbor.loads refuses."""
    assert _outcome(fast.loads, payload) == _outcome(cbor.loads, payload), payload.hex()


@pytest.mark.parametrize("payload", [
    bytes.fromhex("c243010000"),      # 65536 as a bignum: as long as its shortest form (found by hypothesis)
    bytes.fromhex("8201c243010000"),  # the same inside an array
    bytes.fromhex("8302c24501000000001900" + "05"),  # a bignum shorter than 2**32's form beside a longer 5: same length
    bytes.fromhex("d9d9f78101"),      # self-described CBOR
    b"\x81" * 7 + b"\x00",           # nesting deeper than 6
    b"\x82\x01\xf9\x7e\x00",          # float16 NaN
    b"\x82\x01\xd8\x18\x41\x00",      # tag 24
    b"\x82\x01\xf7",                 # undefined
    b"\x82\x01\xf0",                 # simple value 16
    b"\x82\x01\xf8\x20",             # simple value 32
    b"\xa1\x41\x00\x01",             # a byte-string map key
])
def test_fast_decoder_refuses_what_spec_forbids(payload):
    with pytest.raises(CborError):
        cbor.loads(payload)
    with pytest.raises(CborError):
        fast.loads(payload)


HOSTILE = [
    b"\x84\x43\xa1\x01\x04\xa2\x04\x44c001\x06\x41\x01\x5b\x00\x00\x00\x10\x00\x00\x00\x00",
    b"\x9b\x00\x00\x00\x10\x00\x00\x00\x00" + b"\x00" * 100,
    b"\xbb\x00\x00\x00\x10\x00\x00\x00\x00" + b"\x00" * 100,
    b"\x81" * 240 + b"\x00",
    b"\x7b\x00\x00\x00\x10\x00\x00\x00\x00abc",
]


@pytest.mark.parametrize("env", HOSTILE)
def test_hostile_lengths_allocate_no_more_than_a_frame(env):
    frame = framing.encode_frame(env)
    mac = cose.Mac(KEY)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError):
            codec.open_frame(frame, cose.UP, lambda k: mac)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, peak
