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


# The park's reference wiring (ESP32-DevKitC, docs/technician.md): defaults that a
# --config file or --set overrides. Input-only GPIOs 34-39 carry the ADCs; 6-11 (flash)
# and the strapping pins 0/2/12/15 are avoided.
LINK = {"uart": 1, "baud": 115200, "tx": 17, "rx": 16}
TEMPLATES = {
    "container_sensor": {"link": LINK, "rt": {"batt_div": 2000},
                         "pins": {"trig": 5, "echo": 18, "temp": 34, "batt": 35}, "app": {}},
    "light_pole": {"link": LINK, "rt": {}, "pins": {"lamp": 25, "motion": 27, "ambient": 34, "lamp_cs": 35},
                   "app": {}},
    "locker": {"link": LINK, "rt": {},
               "pins": {"lock1": 25, "lock2": 26, "lock3": 27, "lock4": 32,
                        "door1": 33, "door2": 13, "door3": 14, "door4": 4},
               "app": {"comps": 4}},
}


PARK_RADIO = {"container_sensor": "ble", "light_pole": "wifi", "locker": "wifi"}
"""The radio each role uses in a park (docs/gateway.md, the connection model): `provision --link`."""


def template(role: str) -> dict:
    t = TEMPLATES[check_role(role)]
    return {k: dict(v) for k, v in t.items()}
