"""Unit tests of the protocol building blocks; portable (CPython and MicroPython)."""

from protocol import cbor, cobs, codec, cose, framing, messages, token
from protocol.crc16 import crc16
from protocol.errors import (CborError, CobsError, CrcError, OversizeError, ProtocolError, ReplayError,
                             SchemaError, TokenError, UnknownTypeError)
from protocol.replay import ReplayWindow, SeqCounter
from vectors_io import schemas

KEY = b"0123456789abcdef0123456789abcdef"


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("did not raise " + exc.__name__)


def test_crc16_ccitt_false_check_value():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_crc16_every_table_entry_and_chaining():
    data = bytes(range(256))
    assert crc16(data) == 0x3FBD
    assert crc16(data[100:], crc16(data[:100])) == 0x3FBD


def test_crc16_table_is_a_constant_not_built_at_boot():
    from protocol import crc16 as mod
    t = getattr(mod, "_TABLE", None)  # a device folds its const() table into crc16(); CPython uses crc_hqx
    if t is not None:
        assert type(t) is bytes and len(t) == 32


def test_hmac_sha256_rfc4231_case_2():
    mac = cose.Mac(b"Jefe" * 4)  # keys shorter than 16 bytes are refused; case 2 padded to 16 is our own
    assert len(mac.digest(b"x")) == 32
    # RFC 4231 test case 4: key 0x01..0x19, data 0xcd * 50
    k = bytes(range(1, 26))
    d = cose.Mac(k).digest(b"\xcd" * 50)
    assert d[:8] == bytes((0x82, 0x55, 0x8a, 0x38, 0x9a, 0x44, 0x3c, 0x0e))


def test_mac_refuses_short_keys():
    raises(ValueError, cose.Mac, b"short")


def test_ct_equal():
    assert cose.ct_equal(b"abcdefgh", b"abcdefgh")
    assert not cose.ct_equal(b"abcdefgh", b"abcdefgx")
    assert not cose.ct_equal(b"abcdefgh", b"abcdefg")


def test_cbor_round_trip_and_canonical_order():
    v = [0, 23, 24, 255, 256, 65535, 65536, 2 ** 32, 2 ** 40, -1, -24, -25, -2 ** 31, b"", b"\x00" * 30, "",
         "Grünfläche", [], [[[]]], {}, {"b": 1, "a": 2, 10: 3, -1: 4}, True, False, None]
    enc = cbor.dumps(v)
    assert cbor.loads(enc) == v
    assert cbor.dumps({"b": 1, "a": 2}) == b"\xa2\x61\x61\x02\x61\x62\x01"
    assert cbor.dumps({10: 0, -1: 0, "a": 0, 24: 0})[1:] == b"\x0a\x00\x20\x00\x18\x18\x00\x61\x61\x00"


def test_cbor_rejects_hostile_input():
    for bad, what in (
        (b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", "bytes"),
        (b"\x9b\x00\x00\x00\x10\x00\x00\x00\x00", "array"),
        (b"\xbb\x00\x00\x00\x10\x00\x00\x00\x00", "map"),
        (b"\x81" * 10 + b"\x00", "nesting"),
        (b"\xc1\x00", "tag"),
        (b"\xf9\x3c\x00", "float16"),
        (b"\xfb" + b"\x00" * 8, "float64"),
        (b"\xf7", "undefined"),
        (b"\x9f\x00\xff", "indefinite"),
        (b"\x1c", "reserved"),
        (b"\x62\xff\xfe", "utf8"),
        (b"\xa2\x01\x00\x01\x00", "duplicate key"),
        (b"\xa1\x40\x00", "bytes key"),
        (b"\x00\x00", "trailing"),
        (b"\x19\x01", "truncated head"),
        (b"", "empty"),
    ):
        e = raises(CborError, cbor.loads, bad)
        assert e.code == "cbor", what


def test_cobs_round_trip_edges():
    for n in (0, 1, 253, 254, 255, 508, 600):
        for fill in (b"\x00", b"\x01", b"\xff"):
            data = fill * n
            enc = cobs.encode(data)
            assert b"\x00" not in enc
            assert cobs.decode(enc) == data
    raises(CobsError, cobs.decode, b"\x05\x01")
    raises(CobsError, cobs.decode, b"\x02\x00")


def test_frame_round_trip_and_errors():
    env = b"\x84" + bytes(range(1, 60))
    f = framing.encode_frame(env)
    assert f[-1] == 0 and b"\x00" not in f[:-1]
    assert framing.decode_frame(f) == env
    bad = bytearray(f)
    bad[3] ^= 0x10
    raises(CrcError, framing.decode_frame, bytes(bad))
    raises(OversizeError, framing.encode_frame, b"\x01" * (framing.MAX_ENVELOPE + 1))
    assert len(framing.encode_frame(b"\x01" * framing.MAX_ENVELOPE)) <= framing.MAX_FRAME


def test_deframer_resynchronises_after_garbage_and_cut_frames():
    f = framing.encode_frame(b"\x84hello")
    stream = b"\x13\x37garbage\x00" + f[:4] + b"\x00" + f + b"\xff" * 300 + b"\x00" + f
    d = framing.Deframer()
    good = 0
    errors = []
    # feed in awkward chunk sizes, as a UART or BLE would deliver
    i = 0
    step = 1
    while i < len(stream):
        for env, err in d.feed(stream[i:i + step]):
            if err is None:
                assert env == b"\x84hello"
                good += 1
            else:
                errors.append(err.code)
        i += step
        step = step % 7 + 1
    assert good == 2
    assert "oversize" in errors and len(errors) == 3
    assert d.pending == 0


def test_replay_window():
    w = ReplayWindow()
    for s in (5, 3, 4, 40, 9, 39):
        w.accept(s)
    raises(ReplayError, w.accept, 40)
    raises(ReplayError, w.accept, 9)
    raises(ReplayError, w.check, 8)  # 40 - 8 = 32: outside the window
    w.accept(10)
    w.reset(100)
    raises(ReplayError, w.check, 99)
    w.accept(100)
    raises(ReplayError, w.check, 100)


def test_seq_counter_persists_every_k_and_resumes_above():
    flash = {}

    def load():
        return flash.get("c")

    def store(v):
        flash["c"] = v

    c = SeqCounter(load, store, k=4)
    assert flash["c"] == 4
    used = [c.take() for _ in range(6)]
    assert used == [0, 1, 2, 3, 4, 5] and flash["c"] == 8
    c2 = SeqCounter(load, store, k=4)  # reboot: resumes at the stored ceiling
    assert c2.take() == 8 and flash["c"] == 12
    c2.jump(1000)
    assert c2.take() == 1000 and flash["c"] >= 1001


def test_messages_reject_bad_fields_naming_them():
    e = raises(SchemaError, messages.encode, {"type": "light_set", "level": 101, "hold": 3})
    assert e.field == "level"
    e = raises(SchemaError, messages.encode, {"type": "light_set", "level": True, "hold": 3})
    assert e.field == "level"
    e = raises(SchemaError, messages.encode, {"type": "light_set", "level": 1, "hold": 3, "x": 1})
    assert e.field == "x"
    e = raises(SchemaError, messages.encode, {"type": "config", "values": {"near_full": 1.5}})
    assert e.field == "near_full"
    raises(UnknownTypeError, messages.encode, {"type": "nope"})
    raises(SchemaError, messages.decode, cbor.dumps([144, 50]))


def test_every_schema_round_trips():
    samples = {U: 7, I: -3, N: None, B: True, T: "ok", Y: b"12345678", W: [[0, 1, 2]], C: {"k": 1}}
    table = schemas()
    for code in table:
        name, _, fields = table[code]
        msg = {"type": name}
        for f in fields:
            v = samples[f[1]]
            if f[1] in (U, I) and not f[2] <= v <= f[3]:
                v = f[2]
            if f[1] == Y and not f[2] <= len(v) <= f[3]:
                v = bytes(range(f[2]))
            msg[f[0]] = v
        assert messages.decode(messages.encode(msg)) == msg, name



def test_schema_lookups_by_code_and_name():
    table = schemas()
    assert len(table) == 26 and len(set(s[0] for s in table.values())) == 26
    for code in table:
        assert messages._code(table[code][0]) == code
        assert messages.direction_of(table[code][0]) == table[code][1]
    for code in (0, 11, 128, 255, -1, 1 << 70):
        assert messages._schema(code) is None
        e = raises(UnknownTypeError, messages.from_list, [code])
        assert str(e) == "unknown_type: unknown message type %d" % code
    assert messages._code("nope") is None and messages._code("") is None
    raises(KeyError, messages.direction_of, "nope")
    assert table[144] == ("light_set", messages.DOWN, (("level", U, 0, 100), ("hold", U, 0, 86400)))
    assert table[9] == ("nack", messages.BOTH, (("ref", U, 0, 0xFFFFFFFF), ("code", U, 0, 23), ("field", T, 0, 11)))
    assert table[129][2][1] == ("time", U, 0, (1 << 40) - 1)



def test_a_device_holds_no_host_only_tables():
    import sys
    host = sys.implementation.name != "micropython"
    assert hasattr(messages, "SCHEMAS") == host and hasattr(messages, "TYPES") == host
    assert hasattr(cose, "_HEADS") == host and hasattr(cose.Mac(KEY), "_lead") == host
    assert type(messages._S) is bytes


def test_a_device_interns_no_host_only_names():
    import sys
    host = sys.implementation.name != "micropython"
    assert hasattr(messages, "ROLES") == host and hasattr(messages, "U") == host
    assert hasattr(messages, "ACKED_UP") == host and hasattr(messages, "UP_PAYLOAD_MAX") == host
    assert hasattr(cose, "TAG_LEN") == host and hasattr(cose, "mac_structure") == host

U, I, N, B, T, Y, W, C = range(8)  # messages' field kinds (private consts on a device; test_schema_table)


def test_errors_after_authentication_carry_kid_and_seq():
    mac = cose.Mac(KEY)
    env = cose.seal(mac, cose.DOWN, b"l001", 77, cbor.dumps([144, 500, 1]))
    e = raises(SchemaError, codec.open_envelope, env, cose.DOWN, lambda k: mac)
    assert e.kid == b"l001" and e.seq == 77 and e.field == "level"


def test_tokens():
    mac = cose.Mac(KEY)
    t = token.issue(KEY, "k001", 3, 1000, 2000, 42)
    assert token.verify(mac, t, "k001", 3, 1500) == (42, 2000)
    for args, reason in (
        (("k002", 3, 1500), "wrong_locker"),
        (("k001", 4, 1500), "wrong_compartment"),
        (("k001", 3, 999), "not_yet_valid"),
        (("k001", 3, 2001), "expired"),
    ):
        e = raises(TokenError, token.verify, mac, t, *args)
        assert e.reason == reason
    forged = bytearray(t)
    forged[-1] ^= 1
    assert raises(TokenError, token.verify, mac, bytes(forged), "k001", 3, 1500).reason == "forged"
    other = token.issue(b"x" * 32, "k001", 3, 1000, 2000, 42)
    assert raises(TokenError, token.verify, mac, other, "k001", 3, 1500).reason == "forged"
    assert raises(TokenError, token.verify, mac, b"\xff\x00", "k001", 3, 1500).reason == "malformed"
    assert raises(TokenError, token.verify, mac, b"\x00" * 65, "k001", 3, 1500).reason == "malformed"


def test_protocol_errors_are_one_family():
    for cls in (CborError, CobsError, CrcError, OversizeError, ReplayError, SchemaError, TokenError):
        assert issubclass(cls, ProtocolError)
