"""Lockers: authenticated unlocks from the backbone; door, tamper and overdue-return events.

An unlock from the backbone becomes an `unlock` command with a random request
id: the frame is MACed with the locker's key, and the id lets the locker open
at most once however often the frame is retransmitted. The loop watches the
occupied bitmask in locker telemetry: a compartment that was emptied (an item
lent out) and is not occupied again within the site's loan period raises an
overdue event once; its return raises `returned`.
"""

from __future__ import annotations

import secrets

from gateway.config import SiteConfig
from protocol import codes
from protocol.names import ALARMS

ROLE = "locker"


class Locker:
    __slots__ = ("id", "occupied", "loans", "overdue", "open")

    def __init__(self, lid: str):
        self.id = lid
        self.occupied: int | None = None
        self.open = 0
        self.loans: dict[int, float] = {}  # comp -> when emptied
        self.overdue: set[int] = set()


class Lockers:
    def __init__(self, sites: dict[str, SiteConfig], cmd, alert, devices):
        self.sites = sites
        self.cmd = cmd
        self.alert = alert
        self.devices = devices
        self.lockers: dict[str, Locker] = {}

    def unlock(self, device_id: str, comp: int, reason: str):
        """Forward an unlock; returns the command future (ack from the locker or CommandFailed)."""
        s = self.devices.get(device_id)
        if s is None or s.role != ROLE:
            raise LookupError("%s is not a registered locker" % device_id)
        return self.cmd(device_id, {"type": "unlock", "comp": comp, "req": secrets.randbits(32),
                                    "reason": reason[:32]})

    def on_message(self, s, msg: dict, now: float) -> None:
        t = msg["type"]
        k = self.lockers.get(s.id)
        if k is None:
            k = self.lockers[s.id] = Locker(s.id)
        if t == "locker":
            self._telemetry(s, k, msg, now)
        elif t == "alarm" and msg["code"] in (codes.A_TAMPER, codes.A_DOOR_OPEN_TOO_LONG):
            # A forced door arrives twice: as a door event (open, not authorized) and as the
            # locker's tamper alarm. The alarm is the device's verdict (it knows its unlock
            # window), so the alert is raised from it alone: one opening, one alert id.
            kind = ALARMS[msg["code"]]
            self.alert(s, kind, {"comp": msg["comp"], "value": msg["value"]}, "%s-%d-%s" % (s.id, msg["eid"], kind), now)

    def _telemetry(self, s, k: Locker, msg: dict, now: float) -> None:
        occ = msg["occupied"]
        k.open = msg["open"]
        if k.occupied is not None:
            emptied = k.occupied & ~occ
            refilled = occ & ~k.occupied
            for comp in _bits(emptied):
                k.loans[comp] = now
            for comp in _bits(refilled):
                start = k.loans.pop(comp, None)
                if start is not None:
                    late = comp in k.overdue
                    k.overdue.discard(comp)
                    self.alert(s, "returned", {"comp": comp, "late": late, "loan_s": round(now - start)},
                               "%s-ret-%d-%d" % (s.id, comp, int(now * 1000)), now)
        k.occupied = occ
        self.check_overdue(now, only=s)

    def check_overdue(self, now: float, only=None) -> None:
        for lid, k in self.lockers.items():
            s = self.devices.get(lid)
            if s is None or (only is not None and s is not only):
                continue
            limit = self.sites[s.site].lockers.loan_hours * 3600 if s.site in self.sites else None
            if limit is None:
                continue
            for comp, start in k.loans.items():
                if comp not in k.overdue and now - start > limit:
                    k.overdue.add(comp)
                    self.alert(s, "overdue", {"comp": comp, "since": start}, "%s-overdue-%d-%d" % (s.id, comp, int(start)), now)

    def snapshot(self) -> dict:
        return {lid: {"occupied": k.occupied, "open": k.open, "loans": {str(c): t for c, t in k.loans.items()},
                      "overdue": sorted(k.overdue)} for lid, k in self.lockers.items()}

    def restore(self, snap: dict) -> None:
        for lid, v in snap.items():
            k = self.lockers[lid] = Locker(lid)
            k.occupied, k.open = v["occupied"], v["open"]
            k.loans = {int(c): t for c, t in v["loans"].items()}
            k.overdue = set(v["overdue"])

    def status(self) -> dict:
        return {lid: {"occupied": k.occupied, "open": k.open, "on_loan": sorted(k.loans), "overdue": sorted(k.overdue)}
                for lid, k in self.lockers.items()}


def _bits(mask: int):
    comp = 1
    while mask:
        if mask & 1:
            yield comp
        mask >>= 1
        comp += 1
