"""The host's half of protocol.messages: the tables and names only the gateway, tools and tests
use; never on a device.

protocol.messages takes this module's names on CPython, so `messages.SCHEMAS`, `messages.U`,
`messages.ROLES`, ... are what they always were, while a board interns none of them.
"""

from protocol import messages

__all__ = ("U", "I", "N", "B", "T", "Y", "W", "C", "U32", "U40", "I32", "UP_PAYLOAD_MAX", "ROLES", "ACKED_UP",
           "SCHEMAS", "TYPES", "_schema", "_code")

# On CPython const() is the identity, so messages' private values are ordinary globals to read.
U, I, N, B, T, Y, W, C = (messages._U, messages._I, messages._N, messages._B, messages._T, messages._Y,  # noqa: E741
                          messages._W, messages._C)
"""Field kinds: unsigned int in [lo, hi]; int in [lo, hi]; int or None; bool; text of at most hi
UTF-8 bytes; bytes lo..hi long; curfew windows; config map (see messages)."""
U32, U40, I32 = messages._U32, messages._U40, messages._I32
UP_PAYLOAD_MAX = messages._UP_PAYLOAD_MAX

ROLES = {v: k for k, v in messages.ROLE_IDS.items()}
"""{role id: role name}, the reverse of messages.ROLE_IDS."""

# Events the gateway must acknowledge (the device retransmits them until it does).
ACKED_UP = ("hello", "motion", "door", "alarm", "fault", "access")


def _table():
    out = {}
    s = messages._S
    o = 0
    while o < len(s):
        out[s[o]] = messages._schema(s[o])
        o += 4 + 4 * s[o + 3]
    return out


SCHEMAS = _table()
"""The contract on a host as {code: (name, direction, ((field, kind, lo, hi), ...))}, derived
once from messages._S; lookups read it instead of the table (a device looks up one message at a time)."""
TYPES = {SCHEMAS[c][0]: c for c in SCHEMAS}
_schema = SCHEMAS.get
_code = TYPES.get
