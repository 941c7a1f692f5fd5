"""The three device roles and where their firmware lives."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UnknownRole

ROLES = {
    # role: (protocol role id, needs a booking-token key)
    "container_sensor": (1, False),
    "light_pole": (2, False),
    "locker": (3, True),
}

ID_PREFIX = {"container_sensor": "c", "light_pole": "l", "locker": "k"}


def check_role(role: str | None) -> str:
    if role not in ROLES:
        raise UnknownRole(f"unknown role {role!r}", hint="one of: " + ", ".join(ROLES))
    return role


def needs_booking_key(role: str) -> bool:
    return ROLES[check_role(role)][1]


def _repo_root() -> Path:
    # tools/park_device/roles.py -> repo root (an editable install keeps the checkout layout)
    return Path(__file__).resolve().parents[2]


def firmware_root() -> Path:
    """$PARK_FIRMWARE_DIR or the checkout's firmware/."""
    env = os.environ.get("PARK_FIRMWARE_DIR")
    return Path(env) if env else _repo_root() / "firmware"


def protocol_root() -> Path:
    import protocol
    return Path(protocol.__file__).resolve().parent
