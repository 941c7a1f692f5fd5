"""Message schemas and their compact encoding: payload = CBOR [type, field, field, ...].

A message is a dict {"type": name, field: value, ...} in both VMs. Fields are
positional on the wire (no names), so a container fill report fits a LoRaWAN
DR0 payload. protocol/park.cddl describes the same schemas for other
implementers; tests check that the two agree.
"""

import sys

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from protocol import cbor
from protocol.codes import (DOWN, E_BAD_VALUE, E_BUSY, E_DENIED, E_INTERNAL, E_MALFORMED,  # noqa: F401
                            E_NOT_READY, E_NOT_SUPPORTED, E_UNKNOWN_TYPE, MAX_CONFIG_KEY, ROLE_CONTAINER_SENSOR,
                            ROLE_LIGHT_POLE, ROLE_LOCKER, ST_LINK_ONLY, ST_SAFE_MODE, ST_TIME_VALID, UP,
                            UPD_CHUNK_MAX, UPD_SIZE_MAX)
from protocol.errors import CborError, SchemaError, UnknownTypeError

BOTH = const(2)

# Field kinds: private consts, folded where used (the host's public U, I, ... come from
# protocol.messages_host).
_U = const(0)  # unsigned int in [lo, hi]
_I = const(1)  # int in [lo, hi]
_N = const(2)  # int in [lo, hi] or None (null: "not measured", never a fake 0)
_B = const(3)  # bool
_T = const(4)  # text of at most hi UTF-8 bytes
_Y = const(5)  # bytes, lo..hi long
_W = const(6)  # curfew windows: at most hi entries [start_min, end_min, max_level]
_C = const(7)  # config map: at most hi entries, text key (<= 12 bytes) -> int | text (<= 32) | bool

_U32 = const(0xFFFFFFFF)
NACK_FIELD_MAX = const(11)
"""A nack names its field in at most 11 bytes (longer names are cut), so a nack fits UP_PAYLOAD_MAX."""
_U40 = const((1 << 40) - 1)
_I32 = const(0x7FFFFFFF)

# the role names a config's "role" and a firmware package carry (ROLES, the reverse, is host-only)
ROLE_IDS = {"container_sensor": ROLE_CONTAINER_SENSOR, "light_pole": ROLE_LIGHT_POLE, "locker": ROLE_LOCKER}

_UP_PAYLOAD_MAX = const(20)
"""Largest uplink payload (UP_PAYLOAD_MAX on a host): with an 8-byte id and a sequence number below
2**24 the envelope is at most 51 bytes, a LoRaWAN EU868 DR0 payload (SPEC 3, Size). Every legal
uplink message fits; encode() refuses anything larger."""

# The schemas, compact: a device holds them as one bytes constant, a list and a tuple, not as ~140
# tuples built at import. Per message: code, direction, name index, field count; per field: name
# index (into _NAMES), kind, index of lo and index of hi (into _BOUNDS). Each entry's comment is
# the entry in words; tests/protocol/test_schema_table.py checks that the two agree. _NAMES is a
# list on purpose: a tuple of literals is compiled into one constant whose strings are separate
# heap objects on a device, while a list display interns them (shared with every other use).
_NAMES = [
    'hello', 'heartbeat', 'fill', 'light', 'locker', 'motion', 'door', 'alarm', 'fault', 'access', 'ack', 'nack',
    'welcome', 'resync', 'time', 'light_set', 'light_profile', 'prelight', 'unlock', 'config', 'reboot', 'update',
    'update_offer', 'update_chunk', 'update_commit', 'update_abort', 'role', 'fw', 'caps', 'nonce', 'uptime',
    'heap', 'boots', 'status', 'batt', 'dropped', 'temp', 'level', 'state', 'ambient', 'lamp_ma', 'open', 'locked',
    'occupied', 'pending', 'eid', 't', 'count', 'comp', 'authorized', 'code', 'value', 'result', 'token', 'ref',
    'field', 'echo', 'hb', 'floor', 'hold', 'base', 'full', 'fade_up', 'fade_down', 'max', 'curfew', 'hops', 'req',
    'reason', 'values', 'delay', 'uid', 'off', 'kind', 'mpy', 'size', 'sha', 'data',
]
_BOUNDS = (
    -_I32 - 1, -0x10000, -40, 0, 1, 3, 4, 8, NACK_FIELD_MAX, 15, 16, 23, 32, 100, 125, UPD_CHUNK_MAX, 255, 3600,
    60000, 0xFFFF, 86400, 600000, 999999, UPD_SIZE_MAX - 1, UPD_SIZE_MAX, _I32, _U32, _U40,
)
_S = (
    # 1 hello UP: role U 1..3, fw U 0..999999, caps U 0..65535, nonce Y 8..8
    b"\x01\x00\x00\x04\x1a\x00\x04\x05\x1b\x00\x03\x16\x1c\x00\x03\x13\x1d\x05\x07\x07"
    # 2 heartbeat UP: uptime U 0..65535, heap U 0..255, boots U 0..255, status U 0..255, fw U 0..999999, batt N 0..255,
    #   dropped U 0..255
    b"\x02\x00\x01\x07\x1e\x00\x03\x13\x1f\x00\x03\x10\x20\x00\x03\x10\x21\x00\x03\x10\x1b\x00\x03\x16"
    b"\x22\x02\x03\x10\x23\x00\x03\x10"
    # 16 fill UP: fill N 0..100, temp N -40..125, batt N 0..255
    b"\x10\x00\x02\x03\x02\x02\x03\x0d\x24\x02\x02\x0e\x22\x02\x03\x10"
    # 17 light UP: level U 0..100, state U 0..15, ambient U 0..65535, lamp_ma U 0..65535
    b"\x11\x00\x03\x04\x25\x00\x03\x0d\x26\x00\x03\x09\x27\x00\x03\x13\x28\x00\x03\x13"
    # 18 locker UP: open U 0..4294967295, locked U 0..4294967295, occupied U 0..4294967295, pending U 0..65535
    b"\x12\x00\x04\x04\x29\x00\x03\x1a\x2a\x00\x03\x1a\x2b\x00\x03\x1a\x2c\x00\x03\x13"
    # 3 motion UP: eid U 0..4294967295, t U 0..4294967295, count U 0..255
    b"\x03\x00\x05\x03\x2d\x00\x03\x1a\x2e\x00\x03\x1a\x2f\x00\x03\x10"
    # 4 door UP: eid U 0..4294967295, t U 0..4294967295, comp U 1..32, open B 0..0, authorized B 0..0
    b"\x04\x00\x06\x05\x2d\x00\x03\x1a\x2e\x00\x03\x1a\x30\x00\x04\x0c\x29\x03\x03\x03\x31\x03\x03\x03"
    # 5 alarm UP: eid U 0..4294967295, t U 0..4294967295, code U 0..255, comp U 0..32, value I -65536..65535
    b"\x05\x00\x07\x05\x2d\x00\x03\x1a\x2e\x00\x03\x1a\x32\x00\x03\x10\x30\x00\x03\x0c\x33\x01\x01\x13"
    # 6 fault UP: eid U 0..4294967295, t U 0..4294967295, code U 0..255, value I -2147483648..2147483647
    b"\x06\x00\x08\x04\x2d\x00\x03\x1a\x2e\x00\x03\x1a\x32\x00\x03\x10\x33\x01\x00\x19"
    # 7 access UP: eid U 0..4294967295, t U 0..4294967295, comp U 0..32, result U 0..15, token U 0..4294967295
    b"\x07\x00\x09\x05\x2d\x00\x03\x1a\x2e\x00\x03\x1a\x30\x00\x03\x0c\x34\x00\x03\x09\x35\x00\x03\x1a"
    # 8 ack BOTH: ref U 0..4294967295
    b"\x08\x02\x0a\x01\x36\x00\x03\x1a"
    # 9 nack BOTH: ref U 0..4294967295, code U 0..23, field T 0..11
    b"\x09\x02\x0b\x03\x36\x00\x03\x1a\x32\x00\x03\x0b\x37\x04\x03\x08"
    # 129 welcome DOWN: echo Y 8..8, time U 0..1099511627775, hb U 0..86400
    b"\x81\x01\x0c\x03\x38\x05\x07\x07\x0e\x00\x03\x1b\x39\x00\x03\x14"
    # 130 resync DOWN: echo Y 8..8, floor U 0..4294967295
    b"\x82\x01\x0d\x02\x38\x05\x07\x07\x3a\x00\x03\x1a"
    # 131 time DOWN: time U 0..1099511627775
    b"\x83\x01\x0e\x01\x0e\x00\x03\x1b"
    # 144 light_set DOWN: level U 0..100, hold U 0..86400
    b"\x90\x01\x0f\x02\x25\x00\x03\x0d\x3b\x00\x03\x14"
    # 145 light_profile DOWN: base U 0..100, full U 0..100, hold U 0..3600, fade_up U 0..60000, fade_down U 0..600000,
    #   max U 0..100, curfew W 0..4
    b"\x91\x01\x10\x07\x3c\x00\x03\x0d\x3d\x00\x03\x0d\x3b\x00\x03\x11\x3e\x00\x03\x12\x3f\x00\x03\x15"
    b"\x40\x00\x03\x0d\x41\x06\x03\x06"
    # 146 prelight DOWN: level U 0..100, hold U 0..3600, hops U 0..15
    b"\x92\x01\x11\x03\x25\x00\x03\x0d\x3b\x00\x03\x11\x42\x00\x03\x09"
    # 160 unlock DOWN: comp U 1..32, req U 0..4294967295, reason T 0..32
    b"\xa0\x01\x12\x03\x30\x00\x04\x0c\x43\x00\x03\x1a\x44\x04\x03\x0c"
    # 176 config DOWN: values C 0..16
    b"\xb0\x01\x13\x01\x45\x07\x03\x0a"
    # 177 reboot DOWN: delay U 0..3600
    b"\xb1\x01\x14\x01\x46\x00\x03\x11"
    # 10 update UP: uid U 0..4294967295, state U 0..15, off U 0..4194304, reason U 0..255
    b"\x0a\x00\x15\x04\x47\x00\x03\x1a\x26\x00\x03\x09\x48\x00\x03\x18\x44\x00\x03\x10"
    # 178 update_offer DOWN: uid U 1..4294967295, kind U 0..1, role U 1..3, fw U 0..999999, mpy U 0..255,
    #   size U 1..4194304, sha Y 32..32
    b"\xb2\x01\x16\x07\x47\x00\x04\x1a\x49\x00\x03\x04\x1a\x00\x04\x05\x1b\x00\x03\x16\x4a\x00\x03\x10"
    b"\x4b\x00\x04\x18\x4c\x05\x0c\x0c"
    # 179 update_chunk DOWN: uid U 1..4294967295, off U 0..4194303, data Y 1..192
    b"\xb3\x01\x17\x03\x47\x00\x04\x1a\x48\x00\x03\x17\x4d\x05\x04\x0f"
    # 180 update_commit DOWN: uid U 1..4294967295
    b"\xb4\x01\x18\x01\x47\x00\x04\x1a"
    # 181 update_abort DOWN: uid U 1..4294967295
    b"\xb5\x01\x19\x01\x47\x00\x04\x1a"
)

_MAX_TEXT = const(32)


def _code(name):
    """The code of the message called `name`, or None."""
    t = _S
    o = 0
    n = len(t)
    while o < n:
        if _NAMES[t[o + 2]] == name:
            return t[o]
        o += 4 + 4 * t[o + 3]
    return None


def _schema(code):
    """(name, direction, ((field, kind, lo, hi), ...)) of message `code`, or None: built per call on a
    device (a few short-lived tuples instead of the whole table held for good); a host reads SCHEMAS."""
    t = _S
    o = 0
    n = len(t)
    while o < n:
        if t[o] == code:
            return (_NAMES[t[o + 2]], t[o + 1], tuple(
                (_NAMES[t[p]], t[p + 1], _BOUNDS[t[p + 2]], _BOUNDS[t[p + 3]])
                for p in range(o + 4, o + 4 + 4 * t[o + 3], 4)))
        o += 4 + 4 * t[o + 3]
    return None


def _bad(name, field, s):
    return SchemaError(name + "." + field + " " + s, field)


def _check(name, f, v):
    """Raise SchemaError unless v is a legal value for field f = (field, kind, lo, hi) of message `name`."""
    field, kind, lo, hi = f
    tv = type(v)
    if kind == _U or kind == _I or (kind == _N and v is not None):
        if tv is not int:
            raise _bad(name, field, "must be an integer")
        if v < lo or v > hi:
            raise _bad(name, field, "%d out of range %d..%d" % (v, lo, hi))
    elif kind == _B:
        if tv is not bool:
            raise _bad(name, field, "must be a bool")
    elif kind == _T:
        if tv is not str:
            raise _bad(name, field, "must be text")
        if len(v.encode("utf-8")) > hi:
            raise _bad(name, field, "longer than %d bytes" % hi)
    elif kind == _Y:
        if tv is not bytes:
            raise _bad(name, field, "must be bytes")
        if not lo <= len(v) <= hi:
            raise _bad(name, field, "must be %d..%d bytes" % (lo, hi))
    elif kind == _W:
        if tv is not list or len(v) > hi:
            raise _bad(name, field, "must be a list of at most %d windows" % hi)
        for w in v:
            if type(w) is not list or len(w) != 3:
                raise _bad(name, field, "window must be [start_min, end_min, max_level]")
            for j in range(3):
                x = w[j]
                if type(x) is not int or x < 0 or x > (100 if j == 2 else 1439):
                    raise _bad(name, field, "window value out of range")
    elif kind == _C:
        if tv is not dict or len(v) > hi:
            raise _bad(name, field, "must be a map of at most %d entries" % hi)
        for k in v:
            if type(k) is not str or not 0 < len(k) <= MAX_CONFIG_KEY:
                raise _bad(name, field, "keys must be text of 1..%d bytes" % MAX_CONFIG_KEY)
            x = v[k]
            tx = type(x)
            if tx is str:
                if len(x) > _MAX_TEXT:
                    raise _bad(name, k, "text longer than %d" % _MAX_TEXT)
            elif tx is int:
                if x < -_I32 - 1 or x > _U32:
                    raise _bad(name, k, "integer out of range")
            elif tx is not bool:
                raise _bad(name, k, "must be int, text or bool")


def encode(msg):
    """Validate a message dict and return its payload bytes."""
    if type(msg) is not dict:
        raise SchemaError("message must be a dict")
    name = msg.get("type")
    code = _code(name)
    if code is None:
        raise UnknownTypeError("unknown message type %r" % (name,))
    _, d, fields = _schema(code)
    if len(msg) != len(fields) + 1:
        for k in msg:
            if k != "type" and not any(f[0] == k for f in fields):
                raise _bad(name, k, "is not a field of this message")
    out = [code]
    for f in fields:
        if f[0] not in msg:
            raise _bad(name, f[0], "is missing")
        v = msg[f[0]]
        if f[1] == _W and type(v) in (list, tuple):
            v = [list(w) for w in v]  # JSON gives tuples back as lists already; make windows plain lists
        _check(name, f, v)
        out.append(v)
    payload = cbor.dumps(out)
    if len(payload) > _UP_PAYLOAD_MAX and d != DOWN:
        raise SchemaError("%s payload of %d bytes exceeds the uplink limit of %d" % (name, len(payload),
                                                                                       _UP_PAYLOAD_MAX), "type")
    return payload


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
    s = _schema(code)
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
        if f[1] > _I or type(x) is not int or x < f[2] or x > f[3]:
            _check(name, f, x)
        msg[f[0]] = x
    return msg


def direction_of(name):
    code = _code(name)
    if code is None:
        raise KeyError(name)
    return _schema(code)[1]


if sys.implementation.name != "micropython":  # a device never interns the host's tables and names
    from protocol.messages_host import *  # noqa: E402,F401,F403
