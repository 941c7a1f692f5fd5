"""The daemon's journal of the park: one info line per device coming and going, hello, event and alert.

An observer on the event bus (like `tail`), so logging costs the frame path
nothing when the level is above info. Telemetry is not logged: it is the
bulk of the traffic and reaches the backbone anyway. Lines are plain text
without timestamps of their own: journald adds those.
"""

from __future__ import annotations

import logging

from gateway import readable

log = logging.getLogger("park.devices")

_LOGGED = frozenset(("online", "offline", "hello", "event", "alert", "reboot", "resync"))


def line(ev: dict) -> str | None:
    """The journal line for one gateway event, or None for what is not logged (telemetry)."""
    k = ev.get("kind")
    if k not in _LOGGED:
        return None
    dev = ev.get("device", "-")
    if k == "online":
        return "%s online" % dev
    if k == "offline":
        return "%s offline" % dev
    if k == "hello":
        return "%s hello: firmware %s" % (dev, readable.version(ev.get("fw")))
    if k == "event":
        return "%s event: %s" % (dev, readable.message(ev.get("msg") or {}))
    if k == "alert":
        return "%s alert: %s" % (dev, readable.alert(ev.get("alert", ""), ev.get("body") or {}))
    if k == "reboot":
        return "%s rebooted (boot %s)" % (dev, ev.get("boots"))
    return "%s counter resynchronised from %s" % (dev, ev.get("floor"))


def attach(events) -> None:
    """Log the bus's device events at info (nothing is subscribed when info is off)."""
    if not log.isEnabledFor(logging.INFO):
        return

    def write(ev: dict) -> None:
        text = line(ev)
        if text is not None:
            log.info("%s", text)

    events.subscribe(write)
