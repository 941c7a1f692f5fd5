"""The retained device inventory of each site, `<prefix>/<site>/gateway/devices` (like Zigbee2MQTT's bridge/devices).

A consumer that connects late learns at once which devices a site has, their
role, position and firmware, without a request. Published when the daemon
starts, when the registry changes and when a hello brings another firmware
version; only when the content changed. Availability stays on its own
per-device topic. Nothing secret: no keys, no counters.
"""

from __future__ import annotations

import logging
import time

from gateway import readable

log = logging.getLogger("park.inventory")

LEAF = "devices"


def documents(devices, gateway_id: str, version: str) -> dict[str, dict]:
    """Per site, the inventory document (devices sorted by id)."""
    out: dict[str, dict] = {}
    for s in sorted(devices.values(), key=lambda d: d.id):
        info = s.info()
        doc = out.setdefault(info["site"], {"gateway": gateway_id, "version": version, "site": info["site"],
                                            "devices": []})
        doc["devices"].append({"id": info["id"], "role": info["role"], "position": info.get("position"),
                               "fw": readable.version(info.get("fw")) if info.get("fw") is not None else None})
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

    def publish(self) -> None:
        if self.hass is not None:
            self.hass.publish()
        publish = getattr(self.uplink, "site_state_nowait", None)
        if publish is None:  # an uplink without site state (a test double)
            return
        docs = documents(self.devices, self.gateway_id, self.version)
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

    def on_event(self, ev: dict) -> None:
        if ev.get("kind") == "hello":
            self.publish()


def _quiet(f) -> None:
    if not f.cancelled() and f.exception() is not None:
        log.warning("inventory not stored: %s", f.exception())
