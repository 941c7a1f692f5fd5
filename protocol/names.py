"""Words for humans for the protocol's numeric codes (protocol/SPEC.md section 5.2).

For the gateway, tools and tests; a device never imports this module, so its
strings cost no heap there. The numbers come from protocol.codes only: each
table maps a code to its constant's name without the prefix, in lower case.
"""

from protocol import codes


def _table(prefix, skip=()):
    n = len(prefix)
    pairs = [(v, k[n:].lower()) for k, v in vars(codes).items() if k.startswith(prefix) and k not in skip]
    return dict(sorted(pairs))


NACK_CODES = _table("E_")
RESET_CAUSES = _table("CAUSE_")
ALARMS = _table("A_")
FAULTS = _table("F_")
ACCESS = _table("ACC_")
CAPS = _table("CAP_")
UPDATE_KINDS = _table("UK_")
UPDATE_STATES = _table("US_")
UPDATE_REASONS = _table("UR_")
LIGHT_STATES = _table("LS_")
STATUS_FLAGS = _table("ST_", skip=("ST_CAUSE_MASK",))
