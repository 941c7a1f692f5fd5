"""Gateway configuration: one TOML file, validated into plain objects.

Every error names the file, the line and the dotted key, because the person
reading it is an operator with an editor open, not a developer with a
traceback. Each section has documented defaults (ESPHome style): a minimal
file needs only one site and one link. Each default and limit is declared
once, in the `setting` of its dataclass field below (gateway/configread.py
reads them); the [uplink] table's schema is gateway/uplink/config.py, read
by the same reader.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from protocol import rules
from protocol.messages import ROLE_IDS

from gateway.configread import ConfigError, Reader, key_lines, setting

__all__ = ["Config", "ConfigError", "LinkConfig", "SiteConfig", "LightingConfig", "WasteConfig", "LockerConfig",
           "RoleConfig", "SessionConfig", "CurfewWindow", "parse", "load", "key_lines"]

DEFAULT_PATH = "/etc/park-gateway/gateway.toml"
DEFAULT_STATE_DIR = "/var/lib/park-gateway"
DEFAULT_SOCKET = "/run/park-gateway/api.sock"

ENV_CONFIG = "PARK_GATEWAY_CONFIG"
ENV_STATE_DIR = "PARK_GATEWAY_STATE_DIR"
ENV_SOCKET = "PARK_GATEWAY_SOCKET"

ROLES = tuple(ROLE_IDS)
LINK_TYPES = ("serial", "url", "tcp", "ble")

# How often each role reports when nothing happens (s). A container sensor
# sleeps for hours between wakes; it must not be called offline in between.
DEFAULT_HEARTBEAT = {"container_sensor": 6 * 3600, "light_pole": 60, "locker": 60}


# ---------------------------------------------------------------- schema

@dataclass
class LinkConfig:
    """One [[links]] entry; docs/gateway.md "Links" says which keys each type and mode reads."""

    name: str = setting("")  # default: TYPE + index
    type: str = setting("", choices=LINK_TYPES, required=True)
    port: str = setting("")  # serial: device path (prefer /dev/serial/by-id/...)
    url: str = setting("")  # url/tcp client: pyserial URL or tcp://host:port
    baudrate: int = setting(115200, lo=300, hi=4_000_000)
    address: str = setting("")  # ble: one device kept connected (MAC or name); empty: scanner + connection pool
    reconnect_max: float = setting(30.0, lo=0.1, hi=3600)
    # tcp server: devices connect to us (Wi-Fi poles and lockers)
    listen: str = setting("")  # HOST:PORT to listen on (port 0: any free port)
    auth_timeout: float = setting(10.0, lo=0.1, hi=3600)  # s a connection may stay without an authentic frame
    max_clients: int = setting(256, lo=1, hi=10_000)  # connections at once; the oldest anonymous one makes room
    write_queue: int = setting(65536, lo=1024, hi=16 * 1024 * 1024)  # bytes queued per connection, then dropped
    # ble pool: connect on demand, serve, disconnect
    adapter: str = setting("")  # BlueZ adapter ("hci0"); empty: bleak's default
    max_connections: int = setting(5, lo=1, hi=20)  # a Pi's controller holds 5-7 in practice
    queue: int = setting(16, lo=1, hi=1024)  # frames waiting per device for its next connection
    idle_s: float = setting(0.5, lo=0.01, hi=600)  # a served device quiet this long is disconnected
    hold_s: float = setting(15.0, lo=0.1, hi=3600)  # longest connection to one device
    advert_ttl: float = setting(5.0, lo=0.1, hi=3600)  # an advertisement older than this is not connected to
    connect_timeout: float = setting(10.0, lo=0.1, hi=120)


@dataclass
class CurfewWindow:
    start_min: int
    end_min: int
    max_level: int

    def contains(self, minute: int) -> bool:
        if self.start_min <= self.end_min:
            return self.start_min <= minute < self.end_min
        return minute >= self.start_min or minute < self.end_min


@dataclass
class LightingConfig:
    hops: int = setting(2, lo=0, hi=15)
    base: int = setting(rules.LIGHT_BASE, lo=0, hi=100)  # level at night with nobody around
    full: int = setting(rules.LIGHT_FULL, lo=0, hi=100)  # level at a pole that saw motion
    prelight: int = setting(70, lo=0, hi=100)  # level of neighbours ahead
    hold: int = setting(rules.LIGHT_HOLD_S, lo=1, hi=3600)  # s a raised level is held
    day_level: int = setting(0, lo=0, hi=100)
    dusk_offset_min: int = setting(0, lo=-180, hi=180)  # lights on this many minutes after sunset (negative: before)
    dawn_offset_min: int = setting(0, lo=-180, hi=180)  # lights off this many minutes after sunrise
    edges: list[tuple[str, str]] = field(default_factory=list)
    curfew: list[CurfewWindow] = field(default_factory=list)  # caps on the level by local time
    fault_ma: int = setting(20, lo=0, hi=65535)  # lamp current below this while lit = lamp fault


@dataclass
class WasteConfig:
    near_full: int = setting(80, lo=1, hi=100)
    full: int = setting(95, lo=1, hi=100)
    fire_temp: int = setting(70, lo=30, hi=125)  # °C in a container that raises a fire alarm even if the device did not


@dataclass
class LockerConfig:
    loan_hours: float = setting(72.0, lo=0.001, hi=24 * 365)  # an emptied compartment not refilled by then is overdue
    door_open_max_s: int = setting(300, lo=1, hi=86400)


@dataclass
class SiteConfig:
    name: str
    latitude: float = setting(0.0, lo=-90, hi=90, required=True)
    longitude: float = setting(0.0, lo=-180, hi=180, required=True)
    timezone: str = setting("Europe/Berlin")
    lighting: LightingConfig = field(default_factory=LightingConfig)
    waste: WasteConfig = field(default_factory=WasteConfig)
    lockers: LockerConfig = field(default_factory=LockerConfig)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass
class RoleConfig:
    heartbeat: int = setting(60, lo=1, hi=86400)  # s, sent to the device in welcome.hb; per role: DEFAULT_HEARTBEAT
    offline_factor: float = setting(2.5, lo=1.0, hi=100.0)  # silent for factor * heartbeat + grace -> offline
    offline_grace: float = setting(5.0, lo=0.0, hi=86400.0)


@dataclass
class SessionConfig:
    retries: int = setting(5, lo=1, hi=20)  # downlink command transmissions before giving up
    retry_base: float = setting(0.5, lo=0.01, hi=60)  # s, doubled each retry
    retry_max: float = setting(8.0, lo=0.01, hi=600)
    queue: int = setting(16, lo=1, hi=1024)  # queued commands per device; more are refused with a typed error
    time_sync: int = setting(6 * 3600, lo=60, hi=7 * 86400)  # s between time commands to a device
    commit_ms: float = setting(150.0, lo=0.0, hi=1000)  # outbox group commit window (docs/uplink.md)
    command_timeout: float = setting(20.0, lo=0.1, hi=3600)  # s from asking a command to giving up on it
    backpressure: int = setting(8000, lo=0, hi=1_000_000)  # uplink backlog (messages) that stops the links; 0: never
    shed_telemetry: bool = setting(True)  # above half that backlog, telemetry to the backbone: newest per device


@dataclass
class GatewaySection:
    """The [gateway] table."""

    state_dir: str = setting(DEFAULT_STATE_DIR)
    api_socket: str = setting(DEFAULT_SOCKET)
    api_group: str = setting("")
    log_level: str = setting("info", choices=("debug", "info", "warning", "error"))
    trust_clock: bool = setting(False)  # hand out time without NTP sync (an RTC, or a VM whose host keeps time)


@dataclass
class Config:
    path: str = ""
    state_dir: str = GatewaySection.state_dir
    api_socket: str = GatewaySection.api_socket
    api_group: str = GatewaySection.api_group
    log_level: str = GatewaySection.log_level
    trust_clock: bool = GatewaySection.trust_clock
    links: list[LinkConfig] = field(default_factory=list)
    sites: dict[str, SiteConfig] = field(default_factory=dict)
    roles: dict[str, RoleConfig] = field(default_factory=dict)
    session: SessionConfig = field(default_factory=SessionConfig)
    uplink_table: dict[str, Any] = field(default_factory=dict)
    uplink: Any = None  # gateway.uplink.UplinkConfig, read by the same reader from [uplink]
    web: Any = None  # gateway.web.config.WebConfig, from [web]
    hass: Any = None  # gateway.uplink.hass.HassConfig, from [hass] (Home Assistant discovery)

    @property
    def registry_path(self) -> str:
        return os.path.join(self.state_dir, "registry.sqlite")

    @property
    def outbox_path(self) -> str:
        return os.path.join(self.state_dir, "outbox.sqlite")

    def role(self, name: str) -> RoleConfig:
        return self.roles.get(name) or RoleConfig(DEFAULT_HEARTBEAT.get(name, 60))


_TOP = ("gateway", "uplink", "links", "sites", "roles", "session", "web", "hass")


# ---------------------------------------------------------------- reading

def _hhmm(r: Reader, path: tuple, v) -> int:
    if not isinstance(v, str) or not re.fullmatch(r"\d{1,2}:\d{2}", v):
        raise r.error(path, "must be a time \"HH:MM\", got %r" % (v,))
    h, m = map(int, v.split(":"))
    if h > 23 or m > 59:
        raise r.error(path, "%r is not a time of day" % v)
    return h * 60 + m


def listen_address(text: str) -> tuple[str, int] | None:
    """"HOST:PORT" (IPv6 in brackets) as (host, port), or None if it is not one."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]/\s]+):(\d{1,5})", text)
    if m is None:
        return None
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return (host, int(port)) if int(port) <= 65535 else None


def _links(r: Reader, raw) -> list[LinkConfig]:
    if not isinstance(raw, list):
        raise r.error(("links",), "must be an array of tables: [[links]]")
    out = []
    names = set()
    for i, d in enumerate(raw):
        p = ("links", i)
        t = r.get(r.table(d, p, tuple(LinkConfig.__dataclass_fields__)), p, "type", str, required=True,
                  choices=LINK_TYPES)
        for need, types in (("port", ("serial",)), ("url", ("url",))):
            if t in types and need not in d:
                raise r.error(p, "missing required key %r" % need)
        if t == "tcp" and ("url" in d) == ("listen" in d):
            raise r.error(p, "needs one of 'url' (connect to a device) or 'listen' (devices connect here)")
        lk = LinkConfig(**r.section(d, p, LinkConfig, name="%s%d" % (t, i)))
        if lk.name in names:
            raise r.error(p + ("name",), "duplicate link name %r" % lk.name)
        names.add(lk.name)
        if t == "tcp" and lk.url and not re.fullmatch(r"(tcp|socket)://[^:/]+:\d+/?", lk.url):
            raise r.error(p + ("url",), "must be tcp://HOST:PORT, got %r" % lk.url)
        if t == "tcp" and lk.listen and listen_address(lk.listen) is None:
            raise r.error(p + ("listen",), "must be HOST:PORT (port 0-65535), got %r" % lk.listen)
        out.append(lk)
    return out


def _lighting(r: Reader, d, lp: tuple) -> LightingConfig:
    L = LightingConfig(**r.section(d, lp, LightingConfig, extra=("edges", "curfew")))
    for j, e in enumerate(r.get(d, lp, "edges", list, [])):
        if not (isinstance(e, list) and len(e) == 2 and all(rules.valid_id(x) for x in e)):
            raise r.error(lp + ("edges",), "edge %d must be a pair of pole ids [\"l001\", \"l002\"], got %r" % (j, e))
        if e[0] == e[1]:
            raise r.error(lp + ("edges",), "edge %d joins %r to itself" % (j, e[0]))
        L.edges.append((e[0], e[1]))
    curfew = r.get(d, lp, "curfew", list, [])
    if len(curfew) > 4:
        raise r.error(lp + ("curfew",), "at most 4 windows (the device holds 4)")
    wp = lp + ("curfew",)
    for j, w in enumerate(curfew):
        if not isinstance(w, dict) or set(w) - {"start", "end", "max"} or not {"start", "end"} <= set(w):
            raise r.error(wp, "window %d must be {start = \"HH:MM\", end = \"HH:MM\", max = LEVEL}" % j)
        mx = w.get("max", 0)
        if not isinstance(mx, int) or isinstance(mx, bool) or not 0 <= mx <= 100:
            raise r.error(wp, "window %d: max must be a level 0..100, got %r" % (j, mx))
        L.curfew.append(CurfewWindow(_hhmm(r, wp, w["start"]), _hhmm(r, wp, w["end"]), mx))
    if L.prelight > L.full:
        raise r.error(lp + ("prelight",), "prelight level %d is above full %d" % (L.prelight, L.full))
    return L


def _site(r: Reader, name: str, d) -> SiteConfig:
    p = ("sites", name)
    site = SiteConfig(name=name, **r.section(d, p, SiteConfig, extra=("lighting", "waste", "lockers")))
    try:
        ZoneInfo(site.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise r.error(p + ("timezone",), "unknown time zone %r (use an IANA name like Europe/Berlin)"
                      % site.timezone) from None
    site.lighting = _lighting(r, d.get("lighting", {}), p + ("lighting",))
    wp = p + ("waste",)
    site.waste = WasteConfig(**r.section(d.get("waste", {}), wp, WasteConfig))
    if site.waste.near_full >= site.waste.full:
        raise r.error(wp + ("near_full",), "near_full %d must be below full %d" % (site.waste.near_full,
                                                                                    site.waste.full))
    site.lockers = LockerConfig(**r.section(d.get("lockers", {}), p + ("lockers",), LockerConfig))
    return site


def parse(text: str, file: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    """Validate a TOML document; raises ConfigError naming file, line and key."""
    from gateway.uplink.config import read_uplink
    from gateway.uplink.hass import read_hass
    from gateway.web.config import read_web

    env = os.environ if env is None else env
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        raise ConfigError("not valid TOML: %s" % e, "", file, int(m.group(1)) if m else None) from None
    r = Reader(file, key_lines(text))
    r.table(doc, (), _TOP)

    g = GatewaySection(**r.section(doc.get("gateway", {}), ("gateway",), GatewaySection))
    cfg = Config(path=file, state_dir=env.get(ENV_STATE_DIR) or g.state_dir,
                 api_socket=env.get(ENV_SOCKET) or g.api_socket, api_group=g.api_group, log_level=g.log_level,
                 trust_clock=g.trust_clock)
    cfg.links = _links(r, doc.get("links", []))

    sites = r.table(doc.get("sites", {}), ("sites",), tuple(doc.get("sites", {})))
    if not sites:
        raise r.error(("sites",), "at least one site is needed: [sites.NAME] with latitude and longitude")
    for name, sd in sites.items():
        if not rules.valid_site(name):
            raise r.error(("sites", name), "site name must be %s (it is an MQTT topic level)" % rules.SITE_RULE)
        cfg.sites[name] = _site(r, name, sd)

    rd = r.table(doc.get("roles", {}), ("roles",), ROLES)
    for role in ROLES:
        cfg.roles[role] = RoleConfig(**r.section(rd.get(role, {}), ("roles", role), RoleConfig,
                                                 heartbeat=DEFAULT_HEARTBEAT[role]))
    cfg.session = SessionConfig(**r.section(doc.get("session", {}), ("session",), SessionConfig))

    ut = doc.get("uplink", {})
    if not isinstance(ut, dict):
        raise r.error(("uplink",), "must be a table")
    ut = dict(ut)
    ut.setdefault("sites", sorted(cfg.sites))
    for i, site in enumerate(ut["sites"] if isinstance(ut["sites"], list) else []):
        if site not in cfg.sites:
            raise r.error(("uplink", "sites"), "entry %d: %r is not a [sites.NAME] table in this file" % (i, site))
    cfg.uplink_table = ut
    cfg.uplink = read_uplink(r, ut, ("uplink",))
    cfg.web = read_web(r, doc.get("web", {}), ("web",), cfg.state_dir)
    cfg.hass = read_hass(r, doc.get("hass", {}), ("hass",))
    return cfg


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    path = path or env.get(ENV_CONFIG) or DEFAULT_PATH
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError("cannot read config: %s" % e.strerror, "", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("not UTF-8 at byte %d" % e.start, "", path) from None
    return parse(text, path, env)
