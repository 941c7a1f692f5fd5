"""Lighting energy per night and month, against the same poles always at full level; and the open-data export.

Each pole's level (what it reports, its walkers, the gateway's pre-lights: the
dashboard's "level now") is sampled every SAMPLE_S while it is dark at its
site. Power follows the firmware's dimming curve (DALI arc power: 1 % level ->
0.1 % light, 100 % -> 100 %), so a pole at its 10 % base draws about 0.2 % of
its rated power. Totals per site and night (the night of 2026-11-30 is the one
that starts that evening) are kept in `STATE_DIR/energy.json`, the last
MAX_NIGHTS of them. Nothing personal is in it or in the export: no device
keys, no tokens, no locker use at all.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import os
import time

log = logging.getLogger("park.energy")

SAMPLE_S = 5.0
SAVE_S = 60.0
MAX_NIGHTS = 400


def power_fraction(level) -> float:
    """The share of rated power a pole draws at `level` % (the firmware's curve: 10^(3(p-1)/99 - 3))."""
    if not level or level <= 0:
        return 0.0
    if level >= 100:
        return 1.0
    return 10 ** (3 * (level - 1) / 99 - 3)


def night_of(ts: float, tz) -> str:
    """The local date of the evening a night began (times before noon belong to the night before)."""
    return (dt.datetime.fromtimestamp(ts, tz) - dt.timedelta(hours=12)).date().isoformat()


class EnergyLog:
    """Per site and night: energy used (Wh), energy at full level (Wh), poles counted."""

    def __init__(self, path: str, lamp_watts: float):
        self.path = path
        self.watts = lamp_watts
        self.nights: dict[str, dict[str, dict]] = {}  # site -> night -> {"wh", "full_wh", "poles"}
        self._saved = time.monotonic()
        self._last: float | None = None
        try:
            with open(path, encoding="utf-8") as f:
                self.nights = json.load(f).get("nights", {})
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.warning("%s: starting a new energy log (%s)", path, e)

    def sample(self, snap: dict, sites_cfg, now: float | None = None) -> None:
        """Add the energy since the last sample, from the dashboard snapshot's pole levels."""
        now = time.time() if now is None else now
        dt_s, self._last = (0.0 if self._last is None else min(now - self._last, 4 * SAMPLE_S)), now
        if dt_s <= 0:
            return
        for name, site in snap["sites"].items():
            if not site["lighting"].get("dark") or not site["poles"]:
                continue
            night = night_of(now, sites_cfg[name].tz)
            n = self.nights.setdefault(name, {}).setdefault(night, {"wh": 0.0, "full_wh": 0.0, "poles": 0})
            for p in site["poles"]:
                n["wh"] += self.watts * power_fraction(p["level"]) * dt_s / 3600
                n["full_wh"] += self.watts * dt_s / 3600
            n["poles"] = max(n["poles"], len(site["poles"]))
        if time.monotonic() - self._saved >= SAVE_S:
            self.save()

    def save(self) -> None:
        self._saved = time.monotonic()
        for site in self.nights.values():
            for old in sorted(site)[:-MAX_NIGHTS]:
                del site[old]
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"lamp_watts": self.watts, "nights": self.nights}, f)
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("%s: energy log not saved: %s", self.path, e)

    def rows(self, by: str = "night") -> list[dict]:
        """Per site and night (or month): energy_wh, full_level_wh, saving_wh, saving_pct, poles."""
        acc: dict[tuple[str, str], dict] = {}
        for site, nights in sorted(self.nights.items()):
            for night, n in sorted(nights.items()):
                key = (site, night if by == "night" else night[:7])
                a = acc.setdefault(key, {"wh": 0.0, "full_wh": 0.0, "poles": 0})
                a["wh"] += n["wh"]
                a["full_wh"] += n["full_wh"]
                a["poles"] = max(a["poles"], n["poles"])
        return [{"site": site, by: when, "poles": a["poles"], "energy_wh": round(a["wh"], 3),
                 "full_level_wh": round(a["full_wh"], 3), "saving_wh": round(a["full_wh"] - a["wh"], 3),
                 "saving_pct": round(100 * (1 - a["wh"] / a["full_wh"]), 1) if a["full_wh"] else None}
                for (site, when), a in sorted(acc.items())]


# -- open data: documented fields only (docs/operations.md "Open data")

def fill_rows(snap: dict, history: dict) -> list[dict]:
    out = []
    for name, site in sorted(snap["sites"].items()):
        for b in site["bins"]:
            for t, v in history.get(b["id"], ()):
                out.append({"site": name, "container": b["id"], "time": _iso(t), "fill_pct": v})
    return out


def pickup_rows(pickups: dict) -> list[dict]:
    return [{"site": site, "container": p["id"], "level": p["level"], "fill_pct": p.get("fill"),
             "since": _iso(p["since"]) if p.get("since") else None}
            for site, items in sorted(pickups.items()) for p in items]


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_csv(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in fields})
    return buf.getvalue()


FIELDS = {
    "fill": ["site", "container", "time", "fill_pct"],
    "pickups": ["site", "container", "level", "fill_pct", "since"],
    "energy-night": ["site", "night", "poles", "energy_wh", "full_level_wh", "saving_wh", "saving_pct"],
    "energy-month": ["site", "month", "poles", "energy_wh", "full_level_wh", "saving_wh", "saving_pct"],
}
