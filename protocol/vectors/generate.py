"""Write the golden test vectors (CPython, run from the repo root: python -m protocol.vectors.generate).

Vectors are the contract between implementations: once published, a vector
changes only with a protocol version. Running this again must reproduce the
committed files byte for byte (tests/protocol/test_vectors.py checks that).
"""

import hashlib
import json
import os

from protocol import cbor, cose, framing, messages
from protocol.cobs import encode as cobs_encode
from protocol.crc16 import crc16

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = hashlib.sha256(b"park-edge test vector key (public, never deploy)").digest()
OTHER_KEY = hashlib.sha256(b"park-edge wrong key (public)").digest()
NONCE = bytes.fromhex("0011223344556677")

VALID = [
    # name, direction, kid, seq, message
    ("up-hello", "up", "c001", 0, {"type": "hello", "role": 1, "fw": 10203, "caps": 0x0F, "nonce": NONCE}),
    ("up-heartbeat", "up", "l001", 1234, {"type": "heartbeat", "uptime": 24, "heap": 98, "boots": 7,
                                          "status": 4 | messages.ST_TIME_VALID, "fw": 10203, "batt": None, "dropped": 2}),
    ("up-heartbeat-battery", "up", "c001", 3, {"type": "heartbeat", "uptime": 0, "heap": 95, "boots": 120,
                                                "status": 4, "fw": 10203, "batt": 180, "dropped": 0}),
    ("up-fill", "up", "c001", 57, {"type": "fill", "fill": 73, "temp": 18, "batt": 181}),
    ("up-fill-worst-case", "up", "c001", 0xFFFFFF, {"type": "fill", "fill": 100, "temp": 125, "batt": 255}),
    ("up-fill-sensor-fault", "up", "c002", 58, {"type": "fill", "fill": None, "temp": -12, "batt": 176}),
    ("up-light", "up", "l001", 90, {"type": "light", "level": 35, "state": 2, "ambient": 512, "lamp_ma": 410}),
    ("up-locker", "up", "k001", 200, {"type": "locker", "open": 0b100, "locked": 0b111011, "occupied": 0b11, "pending": 0}),
    ("up-motion", "up", "l002", 91, {"type": "motion", "eid": 91, "t": 1795000000, "count": 1}),
    ("up-door", "up", "k001", 201, {"type": "door", "eid": 201, "t": 1795000100, "comp": 3, "open": True, "authorized": True}),
    ("up-alarm-fire", "up", "c003", 12, {"type": "alarm", "eid": 12, "t": 1795000200, "code": 1, "comp": 0, "value": 71}),
    ("up-alarm-tamper", "up", "k001", 202, {"type": "alarm", "eid": 202, "t": 1795000300, "code": 2, "comp": 5, "value": 0}),
    ("up-fault", "up", "c002", 59, {"type": "fault", "eid": 59, "t": 0, "code": 1, "value": -1}),
    ("up-access-refused", "up", "k001", 203, {"type": "access", "eid": 203, "t": 1795000400, "comp": 2, "result": 3, "token": 4242}),
    ("up-ack", "up", "k001", 204, {"type": "ack", "ref": 77}),
    ("up-nack", "up", "l001", 92, {"type": "nack", "ref": 78, "code": 3, "field": "hold"}),
    ("down-welcome", "down", "c001", 0, {"type": "welcome", "echo": NONCE, "time": 1795000000, "hb": 14400}),
    ("down-resync", "down", "c001", 9, {"type": "resync", "echo": NONCE, "floor": 4096}),
    ("down-time", "down", "l001", 10, {"type": "time", "time": 1795000500}),
    ("down-light-set", "down", "l001", 11, {"type": "light_set", "level": 80, "hold": 30}),
    ("down-light-profile", "down", "l001", 12, {"type": "light_profile", "base": 10, "full": 80, "hold": 45,
                                                "fade_up": 800, "fade_down": 6000, "max": 60,
                                                "curfew": [[1380, 300, 20], [0, 0, 0]]}),
    ("down-prelight", "down", "l002", 13, {"type": "prelight", "level": 60, "hold": 20, "hops": 1}),
    ("down-unlock", "down", "k001", 14, {"type": "unlock", "comp": 3, "req": 900001, "reason": "service"}),
    ("down-config", "down", "c001", 15, {"type": "config", "values": {"near_full": 80, "full": 95, "name": "Glas Nord", "ble": False}}),
    ("down-reboot", "down", "c001", 16, {"type": "reboot", "delay": 5}),
    ("up-update", "up", "l001", 93, {"type": "update", "uid": 7, "state": 1, "off": 4032, "reason": 0}),
    ("down-update-offer", "down", "l001", 19, {"type": "update_offer", "uid": 7, "kind": 0, "role": 2, "fw": 10300,
                                               "mpy": 6, "size": 61234, "sha": bytes(range(32))}),
    ("down-update-chunk", "down", "l001", 20, {"type": "update_chunk", "uid": 7, "off": 4032,
                                               "data": bytes(range(192))}),
    ("down-update-commit", "down", "l001", 21, {"type": "update_commit", "uid": 7}),
    ("down-update-abort", "down", "l001", 22, {"type": "update_abort", "uid": 7}),
    ("down-ack", "down", "k001", 17, {"type": "ack", "ref": 203}),
    ("down-nack", "down", "k001", 18, {"type": "nack", "ref": 204, "code": 5, "field": ""}),
]

DIRS = {"up": cose.UP, "down": cose.DOWN}


def to_json(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_json(x) for x in v]
    return v


def bytes_fields(msg):
    return sorted(k for k, v in msg.items() if isinstance(v, bytes))


def frame_from_envelope(env):
    c = crc16(env)
    return cobs_encode(env + bytes((c >> 8, c & 0xFF))) + b"\x00"


def valid_vector(name, d, kid, seq, msg):
    mac = cose.Mac(KEY)
    k = kid.encode()
    payload = messages.encode(msg)
    env = cose.seal(mac, DIRS[d], k, seq, payload)
    return {
        "name": name,
        "valid": True,
        "direction": d,
        "key_hex": KEY.hex(),
        "kid": kid,
        "seq": seq,
        "external_aad_hex": cose.external_aad(DIRS[d], k, seq).hex(),
        "payload_hex": payload.hex(),
        "envelope_hex": env.hex(),
        "frame_hex": framing.encode_frame(env).hex(),
        "frame_len": len(framing.encode_frame(env)),
        "decoded": to_json(msg),
        "bytes_fields": bytes_fields(msg),
    }


def invalid_vectors():
    mac = cose.Mac(KEY)
    fill = {"type": "fill", "fill": 50, "temp": 20, "batt": 180}
    good_env = cose.seal(mac, cose.UP, b"c001", 100, messages.encode(fill))
    good = framing.encode_frame(good_env)
    aad = cose.external_aad(cose.UP, b"c001", 100).hex()

    def bad(name, frame, error, why, **extra):
        v = {"name": name, "valid": False, "direction": "up", "key_hex": KEY.hex(), "kid": "c001",
             "frame_hex": frame.hex(), "external_aad_hex": aad, "decoded": None, "error": error, "why": why}
        v.update(extra)
        return v

    def env_frame(env):
        return frame_from_envelope(env)

    def sealed(payload, seq=100, direction=cose.UP, key=KEY, kid=b"c001"):
        return env_frame(cose.seal(cose.Mac(key), direction, kid, seq, payload))

    flipped = bytearray(good)
    flipped[5] ^= 0x01
    tag_flip = bytearray(good_env)
    tag_flip[-1] ^= 0x80
    out = [
        bad("invalid-bad-cobs", b"\x05\x84\x43\x00", "cobs", "a COBS block claims 4 more bytes than the frame has"),
        bad("invalid-bad-crc", bytes(flipped), "crc", "one bit flipped inside the envelope"),
        bad("invalid-too-short", b"\x03\x01\x02\x00", "frame", "body shorter than envelope + CRC"),
        bad("invalid-oversize", b"\x01" * framing.MAX_FRAME + b"\x00", "oversize", "longer than MAX_FRAME without a delimiter"),
        bad("invalid-truncated-cbor", env_frame(good_env[:-3]), "cbor", "envelope cut 3 bytes short, CRC recomputed"),
        bad("invalid-trailing-cbor", env_frame(good_env + b"\x00"), "cbor", "one byte after the COSE_Mac0 array"),
        bad("invalid-huge-length", env_frame(b"\x84\x43\xa1\x01\x04\xa2\x04\x44c001\x06\x41\x64\x5b\x00\x00\x00\x10\x00\x00\x00\x00"), "cbor",
            "payload bstr claims 64 GiB"),
        bad("invalid-deep-nesting", env_frame(b"\x81" * 40 + b"\x00"), "cbor", "40 nested arrays"),
        bad("invalid-tag", env_frame(b"\xd2" + good_env), "cbor", "COSE_Mac0 tag 17 is not used: the envelope is untagged"),
        bad("invalid-float", sealed(b"\x84\x10\xf9\x3c\x00\x14\x18\xb4"), "cbor", "fill as a float16 (1.0)"),
        bad("invalid-not-array", env_frame(b"\xa0"), "envelope", "an empty map instead of COSE_Mac0"),
        bad("invalid-wrong-alg", env_frame(b"\x84\x43\xa1\x01\x05" + good_env[5:]), "envelope", "alg 5 (HMAC 256/256) instead of 4"),
        bad("invalid-unknown-kid", sealed(messages.encode(fill), kid=b"zz99"), "unknown_kid", "kid not in the registry",
            frame_kid="zz99"),
        bad("invalid-wrong-key", sealed(messages.encode(fill), key=OTHER_KEY), "bad_tag", "sealed with another key"),
        bad("invalid-bad-tag", env_frame(bytes(tag_flip)), "bad_tag", "last tag bit flipped, CRC recomputed"),
        bad("invalid-reflected", sealed(messages.encode(fill), direction=cose.DOWN), "bad_tag",
            "a device frame sealed as gateway-to-device: the direction is in the MAC"),
        bad("invalid-replayed", good, "replay", "the same frame twice", preceding_frames_hex=[good.hex()]),
        bad("invalid-stale", sealed(messages.encode(fill), seq=60), "replay", "seq 60 after seq 100: below the window of 32",
            preceding_frames_hex=[good.hex()]),
        bad("invalid-unknown-type", sealed(b"\x82\x18\x63\x01"), "unknown_type", "message type 99"),
        bad("invalid-wrong-type-field", sealed(b"\x84\x10\x63abc\x14\x18\xb4"), "schema", "fill given as text"),
        bad("invalid-out-of-range", sealed(b"\x84\x10\x18\x65\x14\x18\xb4"), "schema", "fill 101 %"),
        bad("invalid-missing-field", sealed(b"\x83\x10\x18\x32\x14"), "schema", "fill report without batt"),
        bad("invalid-wrong-direction", sealed(messages.encode({"type": "unlock", "comp": 1, "req": 1, "reason": ""})),
            "schema", "an unlock command travelling device-to-gateway"),
    ]
    return out


def all_vectors():
    return [valid_vector(*v) for v in VALID] + invalid_vectors()


def main():
    for v in all_vectors():
        with open(os.path.join(HERE, v["name"] + ".json"), "w") as f:
            json.dump(v, f, indent=1, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
