"""SenML (RFC 8428) JSON packs for device telemetry.

One pack per telemetry message: the first record carries the base name
``urn:dev:park:<site>:<device>:`` and the base time; each record carries a
name, an optional unit and exactly one value (``v``, ``vs``, ``vb`` or ``vd``).
Only primary SenML units are used (%, Cel, V, A, lx, s, B), so consumers
never convert.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, Mapping, Sequence

from .errors import SenmlError

__all__ = ["Record", "encode_pack", "records_from_message", "base_name", "UNITS", "SenmlError"]

Record = Mapping[str, Any]  # {"n": str, "u"?: str, "v"|"vs"|"vb"|"vd": value, "t"?: float}

# RFC 8428 section 4.5.1: names use A-Z a-z 0-9 - : . / _ and start with a letter or digit.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:./_-]*$")
_VALUE_KEYS = ("v", "vs", "vb", "vd")
_RECORD_KEYS = frozenset(("n", "u", "t", "ut", "s") + _VALUE_KEYS)

# The SenML units this gateway emits (IANA SenML registry, primary units).
UNITS = frozenset(("%", "Cel", "V", "A", "W", "lx", "s", "m", "B", "count", "%RH", "dBm", "/"))

# Per-role translation of protocol telemetry fields: (field, SenML name, unit, mul, div): the
# value is field * mul / div, so 20 mV steps become volts and hours seconds.
# A field that is None ("not measured") is left out of the pack, never sent as 0.
_FIELDS: dict[str, tuple[tuple[str, str, str | None, int, int], ...]] = {
    # batt travels in 20 mV steps (protocol/SPEC.md section 5): divisor 50 gives volts.
    "fill": (("fill", "fill", "%", 1, 1), ("temp", "temp", "Cel", 1, 1), ("batt", "batt", "V", 1, 50)),
    # ambient is the light sensor's raw ADC reading, not lux: no unit
    "light": (("level", "level", "%", 1, 1), ("state", "state", None, 1, 1), ("ambient", "ambient", None, 1, 1),
              ("lamp_ma", "lamp_current", "A", 1, 1000)),
    "locker": (("open", "open", None, 1, 1), ("locked", "locked", None, 1, 1), ("occupied", "occupied", None, 1, 1),
               ("pending", "pending", "count", 1, 1)),
    # uptime travels in hours and heap in KiB (SPEC section 5, heartbeat): seconds and bytes here
    "heartbeat": (("uptime", "uptime", "s", 3600, 1), ("heap", "heap_free", "B", 1024, 1), ("boots", "boots", "count", 1, 1),
                  ("status", "status", None, 1, 1), ("fw", "fw", None, 1, 1), ("batt", "batt", "V", 1, 50),
                  ("dropped", "dropped", "count", 1, 1)),
}
_ROLE_TYPES = {
    "container_sensor": ("fill", "heartbeat"),
    "light_pole": ("light", "heartbeat"),
    "locker": ("locker", "heartbeat"),
}


# one encoder: json.dumps with non-default arguments builds a new JSONEncoder per call
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def base_name(site: str, device_id: str) -> str:
    return f"urn:dev:park:{site}:{device_id}:"


def records_from_message(role: str, msg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """SenML records for a decoded protocol telemetry message of a device with ``role``."""
    kind = msg.get("type")
    allowed = _ROLE_TYPES.get(role)
    if allowed is None:
        raise SenmlError(None, "role", f"unknown role {role!r}; expected one of {sorted(_ROLE_TYPES)}")
    if kind not in allowed:
        raise SenmlError(None, "type", f"{role} does not send {kind!r} telemetry (expected {allowed})")
    out = []
    for field, name, unit, mul, div in _FIELDS[kind]:
        if field not in msg:
            raise SenmlError(None, field, f"missing from {kind} message")
        value = msg[field]
        if value is None:
            continue
        if div != 1:
            value = value * mul / div
        elif mul != 1:
            value = value * mul
        rec: dict[str, Any] = {"n": name, "v": value}
        if unit:
            rec["u"] = unit
        out.append(rec)
    return out


def _check_record(i: int, rec: Any) -> None:
    if not isinstance(rec, Mapping):
        raise SenmlError(i, None, f"must be a mapping, got {type(rec).__name__}")
    extra = set(rec) - _RECORD_KEYS
    if extra:
        raise SenmlError(i, sorted(extra)[0], "not a SenML field this gateway sends")
    name = rec.get("n")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SenmlError(i, "n", f"name {name!r} must match {_NAME.pattern}")
    unit = rec.get("u")
    if unit is not None and unit not in UNITS:
        raise SenmlError(i, "u", f"unit {unit!r} is not one of {sorted(UNITS)}")
    present = [k for k in _VALUE_KEYS if k in rec]
    if len(present) != 1:
        raise SenmlError(i, "v", f"needs exactly one of v, vs, vb, vd; has {present or 'none'}")
    key = present[0]
    value = rec[key]
    if key == "v" or key == "s":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SenmlError(i, key, f"must be a finite number, got {value!r}")
    elif key == "vb" and not isinstance(value, bool):
        raise SenmlError(i, key, f"must be true or false, got {value!r}")
    elif key in ("vs", "vd") and not isinstance(value, str):
        raise SenmlError(i, key, f"must be a string, got {type(value).__name__}")
    for tkey in ("t", "ut", "s"):
        if tkey in rec:
            tv = rec[tkey]
            if isinstance(tv, bool) or not isinstance(tv, (int, float)) or not math.isfinite(tv):
                raise SenmlError(i, tkey, f"must be a finite number, got {tv!r}")


def encode_pack(site: str, device_id: str, records: Sequence[Record] | Iterable[Record], ts: float,
                validate: bool = True) -> bytes:
    """Validate ``records`` and return the SenML JSON pack (bytes, UTF-8).

    ``ts`` (seconds since the Unix epoch, UTC) becomes the base time; record
    ``t`` values are relative to it, as RFC 8428 defines. ``validate=False`` is for
    records that records_from_message() just built from a schema-checked protocol
    message: checking them again cost a fifth of the gateway's time per frame.
    """
    recs = list(records)
    if not recs:
        raise SenmlError(None, None, "a pack needs at least one record")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 2**28:
        raise SenmlError(None, "bt", f"base time must be an absolute Unix time in seconds, got {ts!r}")
    if validate:
        for i, rec in enumerate(recs):
            _check_record(i, rec)
    first = {"bn": base_name(site, device_id), "bt": ts}
    first.update(recs[0])
    recs[0] = first  # recs is our own list; the caller's records are not changed
    return _ENCODE(recs).encode()
