"""Dashboard operators: names with scrypt password hashes in an owner-only file, and their login sessions.

There is no default operator and no default password: until `park-gateway
operator add NAME` wrote one, nobody can log in, so the dashboard only shows.
Failed logins are slowed per name; sessions live in memory (a restart logs
everyone out) and carry their own CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time

from gateway.registry import write_private

NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
MIN_PASSWORD = 10
_N, _R, _P = 2 ** 14, 8, 1
MAX_FAILS = 5
LOCKOUT_S = 300.0


class OperatorError(ValueError):
    """A bad operator name or password, or an unusable operators file."""


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)


def load(path: str) -> dict[str, dict]:
    if not os.path.exists(path):
        return {}
    if os.stat(path).st_mode & 0o077:
        raise OperatorError("%s: holds password hashes but is readable by others; chmod 600 it" % path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise OperatorError("%s: cannot read operators: %s" % (path, e)) from None
    if not isinstance(doc, dict):
        raise OperatorError("%s: not an operators file" % path)
    return doc


def add(path: str, name: str, password: str, replace: bool = False) -> None:
    if not NAME.match(name or ""):
        raise OperatorError("operator name %r: 1-32 of a-z 0-9 _ . - starting with a letter" % name)
    if len(password) < MIN_PASSWORD:
        raise OperatorError("a password needs at least %d characters" % MIN_PASSWORD)
    ops = load(path)
    if name in ops and not replace:
        raise OperatorError("operator %s exists (--replace to set a new password)" % name)
    salt = secrets.token_bytes(16)
    ops[name] = {"scrypt": _hash(password, salt).hex(), "salt": salt.hex(), "n": _N, "r": _R, "p": _P}
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    write_private(path, json.dumps(ops, indent=1, sort_keys=True))


def remove(path: str, name: str) -> None:
    ops = load(path)
    if name not in ops:
        raise OperatorError("no operator %r (operators: %s)" % (name, ", ".join(sorted(ops)) or "none"))
    del ops[name]
    write_private(path, json.dumps(ops, indent=1, sort_keys=True))


class Sessions:
    """Who is logged in: session id -> (operator, csrf token, expiry)."""

    def __init__(self, path: str, hours: float, clock=time.time):
        self.path = path
        self.lifetime = hours * 3600
        self.clock = clock
        self._live: dict[str, tuple[str, str, float]] = {}
        self._fails: dict[str, list[float]] = {}

    def login(self, name: str, password: str) -> tuple[str, str] | None:
        """(session id, csrf token) for a right password; None otherwise (also while locked out)."""
        now = self.clock()
        fails = [t for t in self._fails.get(name, []) if now - t < LOCKOUT_S]
        self._fails[name] = fails
        if len(fails) >= MAX_FAILS:
            return None
        try:
            rec = load(self.path).get(name)
        except OperatorError:
            rec = None
        ok = False
        if rec is not None:
            got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(rec["salt"]), n=rec["n"], r=rec["r"],
                                 p=rec["p"], dklen=32)
            ok = hmac.compare_digest(got, bytes.fromhex(rec["scrypt"]))
        else:
            _hash(password, b"\0" * 16)  # the same work for an unknown name: no name probing by timing
        if not ok:
            fails.append(now)
            return None
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        self._live[sid] = (name, csrf, now + self.lifetime)
        return sid, csrf

    def who(self, sid: str | None) -> tuple[str, str] | None:
        """(operator, csrf token) of a live session."""
        if not sid:
            return None
        s = self._live.get(sid)
        if s is None:
            return None
        if s[2] < self.clock():
            del self._live[sid]
            return None
        return s[0], s[1]

    def logout(self, sid: str | None) -> None:
        self._live.pop(sid or "", None)
