"""Words for people: what the CLI, the logs, the dashboard and the demo show instead of codes.

One place, so `park-gateway device`, the journal and the dashboard say the same
thing about the same message. The words come from protocol.names.
"""

from __future__ import annotations

import time

from protocol import names


def version(fw) -> str:
    """A firmware number as people write it: 10203 -> "1.2.3" (SPEC: major*10000 + minor*100 + patch)."""
    if fw is None:
        return "-"
    return "%d.%d.%d" % (fw // 10000, fw // 100 % 100, fw % 100)


def age(ts, now: float | None = None) -> str:
    """How long ago an epoch time was: "12s ago", "5m ago", "3h ago", "2d ago", or "never"."""
    if not ts:
        return "never"
    s = max(0.0, (time.time() if now is None else now) - ts)
    if s < 120:
        return "%ds ago" % s
    if s < 7200:
        return "%dm ago" % (s / 60)
    if s < 2 * 86400:
        return "%dh ago" % (s / 3600)
    return "%dd ago" % (s / 86400)


def span(s: float) -> str:
    """A duration: 90 -> "1m30s", 7200 -> "2h"."""
    s = int(round(s))
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm%s" % (s // 60, "%02ds" % (s % 60) if s % 60 else "")
    return "%dh%s" % (s // 3600, "%02dm" % (s % 3600 // 60) if s % 3600 // 60 else "")


def _name(table: dict, code) -> str:
    return table.get(code, "code %s" % code) if isinstance(code, int) else str(code)


def light_state(code) -> str:
    return _name(names.LIGHT_STATES, code)


def compartments(mask) -> str:
    """A compartment bit mask as a list: 0b101 -> "1, 3"; 0 -> "none"."""
    if not mask:
        return "none"
    out, n = [], 1
    while mask:
        if mask & 1:
            out.append(str(n))
        mask >>= 1
        n += 1
    return ", ".join(out)


def report(state: dict) -> str:
    """A device's last telemetry in one line (device info "state")."""
    if not state:
        return "no report yet"
    if "light" in state:
        x = state["light"]
        return "lamp %d%% (%s), %d mA, ambient %d" % (x["level"], light_state(x["state"]), x["lamp_ma"],
                                                    x["ambient"])
    if "fill" in state:
        x = state["fill"]
        fill = "no reading" if x.get("fill") is None else "%d%% full" % x["fill"]
        temp = "" if x.get("temp") is None else ", %d °C" % x["temp"]
        return fill + temp
    if "locker" in state:
        x = state["locker"]
        return "occupied: %s; open: %s; locked: %s" % (compartments(x["occupied"]), compartments(x["open"]),
                                                       compartments(x["locked"]))
    return ", ".join(sorted(state))


def message(msg: dict) -> str:
    """A device message as words: codes named, bit masks listed, event ids and times left out."""
    t = msg.get("type", "")
    f = {k: v for k, v in msg.items() if k not in ("type", "eid", "t")}
    if t == "alarm":
        where = " compartment %d" % f["comp"] if f.get("comp") else ""
        return "alarm %s%s (value %s)" % (_name(names.ALARMS, f.get("code")), where, f.get("value"))
    if t == "fault":
        return "fault %s (value %s)" % (_name(names.FAULTS, f.get("code")), f.get("value"))
    if t == "access":
        tok = " token %d" % f["token"] if f.get("token") else ""
        return "access compartment %s: %s%s" % (f.get("comp"), _name(names.ACCESS, f.get("result")), tok)
    if t == "door":
        return "door %d %s%s" % (f["comp"], "opened" if f["open"] else "closed",
                                 "" if f.get("authorized", True) else " WITHOUT authorisation")
    if t == "motion":
        return "motion (%d)" % f.get("count", 1)
    if t in ("light", "fill", "locker"):
        return report({t: f})
    if t == "heartbeat":
        return "heartbeat: up %s, %d boots, fw %s" % (span(f.get("uptime", 0)), f.get("boots", 0),
                                                       version(f.get("fw")))
    return (t + " " + " ".join("%s=%s" % kv for kv in sorted(f.items()))).strip()


_KEYS = {"comp": "compartment", "since": "since", "fill": "fill", "level": "level"}


def alert(kind: str, body: dict) -> str:
    """An alert raised by a control loop, in one line: times as clock times, not epoch seconds."""
    parts = []
    for k, v in sorted(body.items()):
        if k in ("ts", "t"):
            continue
        if isinstance(v, float) and v > 1e9:  # an epoch time
            v = time.strftime("%H:%M:%S", time.localtime(v))
        elif isinstance(v, str):
            v = v.replace("_", " ")
        parts.append("%s %s" % (_KEYS.get(k, k.replace("_", " ")), v))
    return kind.replace("_", " ") + (" (%s)" % ", ".join(parts) if parts else "")
