"""Home Assistant MQTT discovery: each device's useful entities, announced as retained config messages.

With `[hass] discovery = true`, Home Assistant (or anything that reads its
discovery format) finds the park's devices without a line of YAML: per
device, retained `<prefix>/sensor/<site>_<id>/<object>/config` messages
describe sensors that read the device's existing SenML telemetry topic
(bin fill, temperature, battery; pole level and state; locker compartments
occupied) and take their availability from the device's retained
availability topic and the gateway's status (both must say online). The
messages go through the outbox like everything else. A device that leaves
the registry, or another site or role, has its old config messages cleared
(an empty retained message, which removes the entity); the topics published
are kept in STATE_DIR/hass.json, so this also holds across a restart.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass

from gateway import readable
from gateway.configread import setting
from protocol import names

from .topics import check_segment

log = logging.getLogger("park.hass")

STATE_FILE = "hass.json"
MANUFACTURER = "park-edge"
_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


@dataclass
class HassConfig:
    """`[hass]` in gateway.toml."""

    discovery: bool = setting(False)  # publish Home Assistant MQTT discovery messages for every device
    prefix: str = setting("homeassistant")  # Home Assistant's discovery prefix (its MQTT integration's setting)


def read_hass(r, d, path: tuple) -> HassConfig:
    h = HassConfig(**r.section(d, path, HassConfig))
    if not _PREFIX.match(h.prefix):
        raise r.error(path + ("prefix",), "must be topic levels of A-Z a-z 0-9 _ - (e.g. homeassistant), "
                      "got %r" % h.prefix)
    return h


def _value(record: str) -> str:
    """A template that picks one SenML record's value; it renders nothing for a pack without it (a heartbeat),
    which Home Assistant ignores for a numeric sensor."""
    return "{% for r in value_json if r.n == '" + record + "' %}{{ r.v }}{% endfor %}"


_LIGHT_STATES = "{" + ", ".join("%d: '%s'" % kv for kv in sorted(names.LIGHT_STATES.items())) + "}"
_STATE = ("{% set r = value_json | selectattr('n', 'eq', 'state') | list %}"
          "{{ " + _LIGHT_STATES + "[r[0].v | int] if r else this.state }}")
_OCCUPIED = ("{% for r in value_json if r.n == 'occupied' %}{% set ns = namespace(n=0) %}"
             "{% for i in range(32) %}{% set ns.n = ns.n + (r.v // 2 ** i) % 2 %}{% endfor %}{{ ns.n }}{% endfor %}")

# role -> (object id, entity name, the entity's own fields)
ENTITIES: dict[str, tuple[tuple[str, str, dict], ...]] = {
    "container_sensor": (
        ("fill", "Fill level", {"value_template": _value("fill"), "unit_of_measurement": "%",
                                "state_class": "measurement", "icon": "mdi:delete"}),
        ("temperature", "Temperature", {"value_template": _value("temp"), "device_class": "temperature",
                                        "unit_of_measurement": "°C", "state_class": "measurement"}),
        ("battery", "Battery", {"value_template": _value("batt"), "device_class": "voltage",
                                "unit_of_measurement": "V", "state_class": "measurement",
                                "entity_category": "diagnostic"}),
    ),
    "light_pole": (
        ("level", "Light level", {"value_template": _value("level"), "unit_of_measurement": "%",
                                  "state_class": "measurement", "icon": "mdi:lightbulb-on-outline"}),
        ("state", "Light state", {"value_template": _STATE, "device_class": "enum",
                                  "options": [v for _, v in sorted(names.LIGHT_STATES.items())]}),
    ),
    "locker": (
        ("occupied", "Compartments occupied", {"value_template": _OCCUPIED, "state_class": "measurement",
                                                "icon": "mdi:locker-multiple"}),
    ),
}


def configs(devices, topics, prefix: str, sites, version: str) -> dict[str, bytes]:
    """Every discovery topic with its config message, for the devices of `sites`."""
    out: dict[str, bytes] = {}
    status = [{"topic": topics.status, "value_template": "{{ value_json.state }}"}]
    for s in devices.values():
        if s.site not in sites or s.role not in ENTITIES:
            continue
        node = "%s_%s" % (check_segment(s.site, "site"), check_segment(s.id, "device id"))
        device = {"identifiers": ["park_" + node], "name": s.id, "model": s.role.replace("_", " "),
                  "manufacturer": MANUFACTURER, "suggested_area": s.site}
        if s.fw is not None:
            device["sw_version"] = readable.version(s.fw)
        common = {"state_topic": topics.telemetry(s.site, s.id), "qos": 1,
                  "availability": status + [{"topic": topics.availability(s.site, s.id),
                                             "value_template": "{{ value_json.state }}"}],
                  "availability_mode": "all", "device": device,
                  "origin": {"name": MANUFACTURER, "sw_version": version}}
        for obj, name, own in ENTITIES[s.role]:
            msg = dict(common, name=name, unique_id="park_%s_%s" % (node, obj), **own)
            out["%s/sensor/%s/%s/config" % (prefix, node, obj)] = json.dumps(msg, sort_keys=True).encode()
    return out


class Discovery:
    """Publishes the discovery messages that changed, and clears the ones of devices that went."""

    def __init__(self, cfg: HassConfig, uplink, devices, sites, version: str, state_dir: str):
        self.cfg = cfg
        self.uplink = uplink
        self.devices = devices
        self.sites = frozenset(sites)
        self.version = version
        self.path = os.path.join(state_dir, STATE_FILE)
        self._sent: dict[str, bytes] = {}
        self._known: set[str] = set()  # topics that may hold a retained config (this run's or the last run's)
        try:
            with open(self.path, encoding="utf-8") as f:
                self._known = set(json.load(f)["topics"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("%s: unreadable (%s); entities of devices removed meanwhile may stay in Home Assistant",
                        self.path, e)

    def publish(self) -> None:
        want = configs(self.devices, self.uplink.topics, self.cfg.prefix, self.sites, self.version)
        gone = sorted(self._known - set(want))
        changed = [(t, p) for t, p in sorted(want.items()) if self._sent.get(t) != p]
        if not gone and not changed:
            return
        for topic, payload in changed + [(t, b"") for t in gone]:
            try:
                self.uplink.retained_nowait(topic, payload).add_done_callback(_quiet)
            except Exception as e:  # noqa: BLE001 - discovery must never stop the daemon
                log.warning("Home Assistant discovery not published on %s: %s", topic, e)
                return
        self._sent = want
        if set(want) != self._known:
            self._known = set(want)
            self._save()
        log.info("Home Assistant discovery: %d entities announced, %d removed", len(changed), len(gone))

    def _save(self) -> None:
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"topics": sorted(self._known)}, f)
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("%s not written: %s", self.path, e)


def discovery(cfg, uplink, devices, version: str) -> Discovery | None:
    """The daemon's discovery publisher, or None when `[hass] discovery` is off."""
    h = getattr(cfg, "hass", None)
    if h is None or not h.discovery or not hasattr(uplink, "retained_nowait"):
        return None
    return Discovery(h, uplink, devices, cfg.uplink.sites, version, cfg.state_dir)


def _quiet(f) -> None:
    if not f.cancelled() and f.exception() is not None:
        log.warning("Home Assistant discovery not stored: %s", f.exception())
