"""Identifier rules and shared defaults, one definition for firmware, gateway and tools.

Device-importable (no re, no typing): the checks are plain loops, and each
caller raises its own typed error with ID_RULE or SITE_RULE as the reason.
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from protocol.codes import MAX_KID

SITE_MAX = const(32)
ID_RULE = "1-8 of A-Z a-z 0-9 _ -"
"""A device id: the COSE kid and an MQTT topic level, so no '/', '+', '#' or spaces."""
SITE_RULE = "1-32 of a-z 0-9 _ -"
"""A site name: an MQTT topic level and a config table name."""

# The light profile a pole runs until the gateway sends one, and the one the gateway sends
# unless the site's config says otherwise (SPEC 5, light_profile).
LIGHT_BASE = const(10)
LIGHT_FULL = const(100)
LIGHT_HOLD_S = const(60)
LIGHT_FADE_UP_MS = const(300)
LIGHT_FADE_DOWN_MS = const(3000)
LIGHT_MAX = const(100)


def _word(s, hi, upper):
    if type(s) is not str or not 1 <= len(s) <= hi:
        return False
    for c in s:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "_" or c == "-" or (upper and "A" <= c <= "Z")):
            return False
    return True


def valid_id(s):
    """True if s is a legal device id (ID_RULE)."""
    return _word(s, MAX_KID, True)


def valid_site(s):
    """True if s is a legal site name (SITE_RULE)."""
    return _word(s, SITE_MAX, False)
