"""The retained device inventory of each site, `<prefix>/<site>/gateway/devices` (like Zigbee2MQTT's bridge/devices).

A consumer that connects late learns at once which devices a site has, their
role, position and firmware, without a request. Published when the daemon
starts, when the registry changes and when a hello brings another firmware
version; only when the content changed. Availability stays on its own
per-device topic. Nothing secret: no keys, no counters.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway import readable

log = logging.getLogger("park.inventory")

LEAF = "devices"
SETTLE_S = 1.0  # hellos with new firmware within this long share one publication


def documents(devices, gateway_id: str, version: str) -> dict[str, dict]:
    """Per site, the inventory document (devices sorted by id), from the registry's fields and the
    firmware each device last said in its hello (not `info()`: its live state costs ~10x more)."""
    out: dict[str, dict] = {}
    for s in sorted(devices.values(), key=lambda d: d.id):
        site = s.site
        doc = out.get(site)
        if doc is None:
            doc = out[site] = {"gateway": gateway_id, "version": version, "site": site, "devices": []}
        doc["devices"].append({"id": s.id, "role": s.role, "position": s.dev.position,
                               "fw": readable.version(s.fw) if s.fw is not None else None})
    return out


class Inventory:
    """Publishes each site's inventory through the uplink when it changed."""

    def __init__(self, uplink, devices, gateway_id: str, version: str, sites, hass=None):
        self.uplink = uplink
        self.hass = hass  # gateway.uplink.hass.Discovery when [hass] discovery is on: the same moments
        self.devices = devices
        self.gateway_id = gateway_id
        self.version = version
        self.sites = set(sites)
        self._last: dict[str, dict] = {}
        self._fw: dict[str, int | None] = {}  # what the published documents say, per device
        self._later: asyncio.TimerHandle | None = None

    def publish(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self.hass is not None:
            self.hass.publish()
        publish = getattr(self.uplink, "site_state_nowait", None)
        if publish is None:  # an uplink without site state (a test double)
            return
        docs = documents(self.devices, self.gateway_id, self.version)
        self._fw = {s.id: s.fw for s in self.devices.values()}
        for site in self.sites:
            doc = docs.get(site, {"gateway": self.gateway_id, "version": self.version, "site": site, "devices": []})
            if self._last.get(site) == doc:
                continue
            self._last[site] = doc
            try:
                f = publish(site, LEAF, dict(doc, ts=time.time()))
            except Exception as e:  # noqa: BLE001 - the inventory must never stop the daemon
                log.warning("inventory of %s not published: %s", site, e)
                continue
            f.add_done_callback(_quiet)

    def flush(self) -> None:
        """Publish what a settling burst of hellos changed now (the daemon stops: the backbone keeps the
        retained documents, so they must not stay a version behind)."""
        if self._later is not None:
            self.publish()

    def on_event(self, ev: dict) -> None:
        """A hello republishes only when it brings a firmware the documents do not show, and the hellos
        of one SETTLE_S share one publication: after a power cut or a rollout 10,000 hellos must not
        rebuild the documents of 10,000 devices each (it held the event loop 40-70 ms per hello
        with 200 devices)."""
        if ev.get("kind") != "hello" or self._fw.get(ev.get("device"), -1) == ev.get("fw"):
            return
        if self._later is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a tool, a test): at once
            self.publish()
            return
        self._later = loop.call_later(SETTLE_S, self.publish)


def _quiet(f) -> None:
    if not f.cancelled() and f.exception() is not None:
        log.warning("inventory not stored: %s", f.exception())
