"""Message schemas and their compact encoding: payload = CBOR [type, field, field, ...].

A message is a dict {"type": name, field: value, ...} in both VMs. Fields are
positional on the wire (no names), so a container fill report fits a LoRaWAN
DR0 payload. protocol/park.cddl describes the same schemas for other
implementers; tests check that the two agree.
"""

from protocol import cbor
from protocol.codes import (DOWN, E_BAD_VALUE, E_BUSY, E_DENIED, E_INTERNAL, E_MALFORMED,  # noqa: F401
                            E_NOT_READY, E_NOT_SUPPORTED, E_UNKNOWN_TYPE, MAX_CONFIG_KEY, ROLE_CONTAINER_SENSOR,
                            ROLE_LIGHT_POLE, ROLE_LOCKER, ST_LINK_ONLY, ST_SAFE_MODE, ST_TIME_VALID, UP,
                            UPD_CHUNK_MAX, UPD_SIZE_MAX)
from protocol.errors import CborError, SchemaError, UnknownTypeError

BOTH = 2

# Field kinds.
U = 0  # unsigned int in [lo, hi]
I = 1  # int in [lo, hi]
N = 2  # int in [lo, hi] or None (null: "not measured", never a fake 0)
B = 3  # bool
T = 4  # text of at most hi UTF-8 bytes
Y = 5  # bytes, lo..hi long
W = 6  # curfew windows: at most hi entries [start_min, end_min, max_level]
C = 7  # config map: at most hi entries, text key (<= 12 bytes) -> int | text (<= 32) | bool

U32 = 0xFFFFFFFF
NACK_FIELD_MAX = 11
"""A nack names its field in at most 11 bytes (longer names are cut), so a nack fits UP_PAYLOAD_MAX."""
U40 = (1 << 40) - 1
I32 = 0x7FFFFFFF

# the role names a config's "role" and a firmware package carry
ROLE_IDS = {"container_sensor": ROLE_CONTAINER_SENSOR, "light_pole": ROLE_LIGHT_POLE, "locker": ROLE_LOCKER}
ROLES = {}
for _r in ROLE_IDS:
    ROLES[ROLE_IDS[_r]] = _r

_EVENT = (("eid", U, 0, U32), ("t", U, 0, U32))

UP_PAYLOAD_MAX = 20
"""Largest uplink payload: with an 8-byte id and a sequence number below 2**24 the envelope
is at most 51 bytes, a LoRaWAN EU868 DR0 payload (SPEC 3, Size). Every legal uplink message
fits; encode() refuses anything larger."""

SCHEMAS = {
    # code: (name, direction, fields)
    1: ("hello", UP, (("role", U, 1, 3), ("fw", U, 0, 999999), ("caps", U, 0, 0xFFFF), ("nonce", Y, 8, 8))),
    2: ("heartbeat", UP, (
        ("uptime", U, 0, 0xFFFF), ("heap", U, 0, 255), ("boots", U, 0, 255), ("status", U, 0, 255),
        ("fw", U, 0, 999999), ("batt", N, 0, 255), ("dropped", U, 0, 255))),
    16: ("fill", UP, (("fill", N, 0, 100), ("temp", N, -40, 125), ("batt", N, 0, 255))),
    17: ("light", UP, (("level", U, 0, 100), ("state", U, 0, 15), ("ambient", U, 0, 0xFFFF), ("lamp_ma", U, 0, 0xFFFF))),
    18: ("locker", UP, (("open", U, 0, U32), ("locked", U, 0, U32), ("occupied", U, 0, U32), ("pending", U, 0, 0xFFFF))),
    3: ("motion", UP, _EVENT + (("count", U, 0, 255),)),
    4: ("door", UP, _EVENT + (("comp", U, 1, 32), ("open", B, 0, 0), ("authorized", B, 0, 0))),
    5: ("alarm", UP, _EVENT + (("code", U, 0, 255), ("comp", U, 0, 32), ("value", I, -0x10000, 0xFFFF))),
    6: ("fault", UP, _EVENT + (("code", U, 0, 255), ("value", I, -I32 - 1, I32))),
    7: ("access", UP, _EVENT + (("comp", U, 0, 32), ("result", U, 0, 15), ("token", U, 0, U32))),
    8: ("ack", BOTH, (("ref", U, 0, U32),)),
    9: ("nack", BOTH, (("ref", U, 0, U32), ("code", U, 0, 23), ("field", T, 0, NACK_FIELD_MAX))),
    129: ("welcome", DOWN, (("echo", Y, 8, 8), ("time", U, 0, U40), ("hb", U, 0, 86400))),
    130: ("resync", DOWN, (("echo", Y, 8, 8), ("floor", U, 0, U32))),
    131: ("time", DOWN, (("time", U, 0, U40),)),
    144: ("light_set", DOWN, (("level", U, 0, 100), ("hold", U, 0, 86400))),
    145: ("light_profile", DOWN, (
        ("base", U, 0, 100), ("full", U, 0, 100), ("hold", U, 0, 3600), ("fade_up", U, 0, 60000),
        ("fade_down", U, 0, 600000), ("max", U, 0, 100), ("curfew", W, 0, 4))),
    146: ("prelight", DOWN, (("level", U, 0, 100), ("hold", U, 0, 3600), ("hops", U, 0, 15))),
    160: ("unlock", DOWN, (("comp", U, 1, 32), ("req", U, 0, U32), ("reason", T, 0, 32))),
    176: ("config", DOWN, (("values", C, 0, 16),)),
    177: ("reboot", DOWN, (("delay", U, 0, 3600),)),
    10: ("update", UP, (("uid", U, 0, U32), ("state", U, 0, 15), ("off", U, 0, UPD_SIZE_MAX), ("reason", U, 0, 255))),
    178: ("update_offer", DOWN, (
        ("uid", U, 1, U32), ("kind", U, 0, 1), ("role", U, 1, 3), ("fw", U, 0, 999999), ("mpy", U, 0, 255),
        ("size", U, 1, UPD_SIZE_MAX), ("sha", Y, 32, 32))),
    179: ("update_chunk", DOWN, (("uid", U, 1, U32), ("off", U, 0, UPD_SIZE_MAX - 1), ("data", Y, 1, UPD_CHUNK_MAX))),
    180: ("update_commit", DOWN, (("uid", U, 1, U32),)),
    181: ("update_abort", DOWN, (("uid", U, 1, U32),)),
}

TYPES = {}
for _code in SCHEMAS:
    TYPES[SCHEMAS[_code][0]] = _code


# Events the gateway must acknowledge (the device retransmits them until it does).
ACKED_UP = ("hello", "motion", "door", "alarm", "fault", "access")


_MAX_TEXT = 32


def _bad(name, field, why):
    return SchemaError("%s.%s %s" % (name, field, why), field)


def _check(name, f, v):
    fname, kind, lo, hi = f
    tv = type(v)
    if kind == U or kind == I or (kind == N and v is not None):
        if tv is not int:
            raise _bad(name, fname, "must be an integer")
        if v < lo or v > hi:
            raise _bad(name, fname, "%d out of range %d..%d" % (v, lo, hi))
    elif kind == B:
        if tv is not bool:
            raise _bad(name, fname, "must be a bool")
    elif kind == T:
        if tv is not str:
            raise _bad(name, fname, "must be text")
        if len(v.encode("utf-8")) > hi:
            raise _bad(name, fname, "longer than %d bytes" % hi)
    elif kind == Y:
        if tv is not bytes:
            raise _bad(name, fname, "must be bytes")
        if not lo <= len(v) <= hi:
            raise _bad(name, fname, "must be %d..%d bytes" % (lo, hi))
    elif kind == W:
        if tv is not list or len(v) > hi:
            raise _bad(name, fname, "must be a list of at most %d windows" % hi)
        for w in v:
            if type(w) is not list or len(w) != 3:
                raise _bad(name, fname, "window must be [start_min, end_min, max_level]")
            for j in range(3):
                x = w[j]
                if type(x) is not int or x < 0 or x > (100 if j == 2 else 1439):
                    raise _bad(name, fname, "window value out of range")
    elif kind == C:
        if tv is not dict or len(v) > hi:
            raise _bad(name, fname, "must be a map of at most %d entries" % hi)
        for k in v:
            if type(k) is not str or not 0 < len(k) <= MAX_CONFIG_KEY:
                raise _bad(name, fname, "keys must be text of 1..%d bytes" % MAX_CONFIG_KEY)
            x = v[k]
            tx = type(x)
            if tx is str:
                if len(x) > _MAX_TEXT:
                    raise _bad(name, k, "text longer than %d" % _MAX_TEXT)
            elif tx is int:
                if x < -I32 - 1 or x > U32:
                    raise _bad(name, k, "integer out of range")
            elif tx is not bool:
                raise _bad(name, k, "must be int, text or bool")


def _lists(v):
    """JSON gives tuples back as lists already; make curfew windows plain lists."""
    return [list(w) for w in v]


def encode(msg):
    """Validate a message dict and return its payload bytes."""
    if type(msg) is not dict:
        raise SchemaError("message must be a dict")
    name = msg.get("type")
    code = TYPES.get(name)
    if code is None:
        raise UnknownTypeError("unknown message type %r" % (name,))
    fields = SCHEMAS[code][2]
    if len(msg) != len(fields) + 1:
        for k in msg:
            if k != "type" and not _has(fields, k):
                raise _bad(name, k, "is not a field of this message")
    out = [code]
    for f in fields:
        if f[0] not in msg:
            raise _bad(name, f[0], "is missing")
        v = msg[f[0]]
        if f[1] == W and type(v) in (list, tuple):
            v = _lists(v)
        _check(name, f, v)
        out.append(v)
    payload = cbor.dumps(out)
    if len(payload) > UP_PAYLOAD_MAX and SCHEMAS[code][1] != DOWN:
        raise SchemaError("%s payload of %d bytes exceeds the uplink limit of %d" % (name, len(payload),
                                                                                       UP_PAYLOAD_MAX), "type")
    return payload


def _has(fields, k):
    for f in fields:
        if f[0] == k:
            return True
    return False


def decode(payload, direction=None, loads=None):
    """Parse and validate a payload; `direction` (UP/DOWN) rejects messages sent the wrong way."""
    try:
        v = (loads or cbor.loads)(payload)
    except CborError:
        raise
    except Exception as e:  # a CPython accelerator's own exception types
        raise CborError(str(e))
    return from_list(v, direction)


def from_list(v, direction=None):
    if type(v) is not list or not v:
        raise SchemaError("payload must be a non-empty array")
    code = v[0]
    if type(code) is not int:
        raise SchemaError("message type must be an integer")
    s = SCHEMAS.get(code)
    if s is None:
        raise UnknownTypeError("unknown message type %d" % code)
    name, d, fields = s
    if direction is not None and d != BOTH and d != direction:
        raise SchemaError("%s is not valid in this direction" % name)
    if len(v) != len(fields) + 1:
        raise SchemaError("%s has %d fields, expected %d" % (name, len(v) - 1, len(fields)))
    msg = {"type": name}
    i = 1
    for f in fields:
        x = v[i]
        i += 1
        if f[1] <= I:
            if type(x) is not int or x < f[2] or x > f[3]:
                _check(name, f, x)
        else:
            _check(name, f, x)
        msg[f[0]] = x
    return msg


def direction_of(name):
    return SCHEMAS[TYPES[name]][1]
