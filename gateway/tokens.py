"""Booking tokens for lockers (SPEC section 6), issued by the gateway for a booking system.

The gateway signs with the locker's booking key, the same key `park-device
provision --booking-key FILE` put onto the locker. The key file is read
through protocol.keyfile (32 bytes raw or 64 hex characters, owner-only) from
`--key-file`, or by default from `<state_dir>/booking/<locker>.key`. The key
is never printed, logged or returned; only the token is.

A token opens one compartment of one locker between two times, once (the
locker remembers used ids until they expire); it needs no network at the
locker. `park-gateway token issue` and the backbone request
`{"type": "token", ...}` on `park/<site>/gateway/cmd/req` both end here.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import secrets
import time

from protocol import rules, token
from protocol.keyfile import KeyFileError, read_key_file

MAX_VALIDITY_S = 31 * 86400  # a booking, not a key: a month at most
MAX_COMP = 32
_REL = re.compile(r"^\s*(now)?\s*(?:([+-])\s*(\d+(?:\.\d+)?)\s*(s|m|h|d))?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenRequestError(ValueError):
    """A token request that cannot be honoured; `code` is the stable word, `field` what was wrong."""

    def __init__(self, code: str, message: str, field: str = "", hint: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.hint = hint


def key_path(state_dir: str, locker: str) -> str:
    """Where the gateway keeps a locker's booking key (see module doc)."""
    return os.path.join(state_dir, "booking", "%s.key" % locker)


def parse_time(text, field: str, now: float | None = None) -> int:
    """Unix seconds from an ISO 8601 time ("2026-12-01T14:00+01:00"; without a zone: this machine's local
    time), unix seconds, "now", or "now+2h" / "+30m"."""
    now = time.time() if now is None else now
    if isinstance(text, bool):
        raise TokenRequestError("bad_value", "%s: %r is not a time" % (field, text), field)
    if isinstance(text, (int, float)):
        return int(text)
    if not isinstance(text, str) or not text.strip():
        raise TokenRequestError("bad_value", "%s: a time is required" % field, field)
    m = _REL.match(text)
    if m and (m.group(1) or m.group(2)):
        delta = float(m.group(3)) * _UNITS[m.group(4)] if m.group(2) else 0.0
        return int(now + (delta if m.group(2) != "-" else -delta))
    if re.fullmatch(r"\d{9,11}", text.strip()):
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise TokenRequestError("bad_value", "%s: %r is not a time (e.g. 2026-12-01T14:00, now, now+2h, or unix "
                                "seconds)" % (field, text), field) from None
    return int(t.timestamp())  # naive: local time, as a person at this gateway means it


def issue(key: bytes, locker: str, comp, not_before: int, not_after: int, token_id=None,
          now: float | None = None) -> dict:
    """A token and what it allows; TokenRequestError names a wrong field."""
    now = time.time() if now is None else now
    if not isinstance(locker, str) or not rules.valid_id(locker):
        raise TokenRequestError("bad_value", "locker: %r is not a device id (%s)" % (locker, rules.ID_RULE), "locker")
    if isinstance(comp, bool) or not isinstance(comp, int) or not 1 <= comp <= MAX_COMP:
        raise TokenRequestError("bad_value", "comp: must be a compartment 1-%d, got %r" % (MAX_COMP, comp), "comp")
    if not_after <= not_before:
        raise TokenRequestError("bad_value", "until: must be after from", "until")
    if not_after <= now:
        raise TokenRequestError("bad_value", "until: this time has passed; the token would never open", "until")
    if not_after - not_before > MAX_VALIDITY_S:
        raise TokenRequestError("bad_value", "until: a token is valid for %d days at most" % (MAX_VALIDITY_S // 86400),
                                "until")
    if token_id is None:
        token_id = secrets.randbelow(0xFFFFFFFF) + 1
    elif isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 < token_id <= 0xFFFFFFFF:
        raise TokenRequestError("bad_value", "id: must be 1-4294967295, got %r" % (token_id,), "id")
    raw = token.issue(key, locker, comp, max(0, int(not_before)), int(not_after), token_id)
    return {"locker": locker, "comp": comp, "not_before": int(not_before), "not_after": int(not_after),
            "id": token_id, "token_hex": raw.hex(), "token_b64": base64.urlsafe_b64encode(raw).decode().rstrip("=")}


def read_booking_key(path: str) -> bytes:
    try:
        return read_key_file(path)
    except KeyFileError as e:
        raise TokenRequestError("no_booking_key", "%s: %s" % (e.where, e.why), "locker",
                                e.hint or "copy the locker's booking key (park-device provision --booking-key) "
                                "there, mode 0600") from None


def from_request(state_dir: str, req: dict, now: float | None = None) -> dict:
    """A backbone request {"type": "token", "locker", "comp", "from", "until", "id"?} -> the token."""
    locker = req.get("locker")
    if not isinstance(locker, str) or not rules.valid_id(locker):
        raise TokenRequestError("bad_value", "locker: %r is not a device id (%s)" % (locker, rules.ID_RULE), "locker")
    nbf = parse_time(req.get("from", "now"), "from", now)
    exp = parse_time(req.get("until"), "until", now)
    key = read_booking_key(key_path(state_dir, locker))
    return issue(key, locker, req.get("comp"), nbf, exp, req.get("id"), now)


def for_backbone(devices, state_dir: str, site: str, req: dict) -> dict:
    """The backbone's token request for `site`: the locker must be a registered locker there."""
    from gateway.uplink import CommandError

    s = devices.get(req.get("locker"))
    if s is None or s.site != site or s.role != "locker":
        lockers = sorted(d.id for d in devices.values() if d.site == site and d.role == "locker")
        raise CommandError("unknown_device", "no locker %r at site %r (lockers: %s)"
                           % (req.get("locker"), site, ", ".join(lockers) or "none"), "locker")
    try:
        return from_request(state_dir, req)
    except TokenRequestError as e:
        raise CommandError(e.code, e.message, e.field) from None
