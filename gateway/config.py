"""Gateway configuration: one TOML file, validated into plain objects.

Every error names the file, the line and the dotted key, because the person
reading it is an operator with an editor open, not a developer with a
traceback. Each section has documented defaults (ESPHome style): a minimal
file needs only one site and one link.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from protocol.messages import ROLE_IDS

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


class ConfigError(ValueError):
    """A config value is wrong; `where` is "file:line", `key` the dotted key."""

    def __init__(self, message: str, key: str = "", file: str = "", line: int | None = None):
        self.message = message
        self.key = key
        self.file = file
        self.line = line
        super().__init__(str(self))

    @property
    def where(self) -> str:
        if self.line:
            return "%s:%d" % (self.file or "<config>", self.line)
        return self.file or "<config>"

    def __str__(self) -> str:
        k = self.key + ": " if self.key else ""
        return "%s: %s%s" % (self.where, k, self.message)


# ---------------------------------------------------------------- line finder

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEYLINE = re.compile(r"^\s*((?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*=")


def _split_key(s: str) -> list[str]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_\-]+)", s)
    return [a or b or c for a, b, c in parts]


def key_lines(text: str) -> dict[tuple, int]:
    """Map each dotted key path (array-of-table entries as indexes) to its 1-based line.

    Only what an error message needs: table headers and `key =` lines at the
    start of a line; values inside inline tables map to their key's line.
    """
    out: dict[tuple, int] = {}
    table: tuple = ()
    counts: dict[tuple, int] = {}
    in_multiline = None
    for n, line in enumerate(text.splitlines(), 1):
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            continue
        m = _HEADER.match(line)
        if m and not _KEYLINE.match(line):
            path = tuple(_split_key(m.group(2)))
            if m.group(1) == "[[":
                i = counts.get(path, -1) + 1
                counts[path] = i
                path = path + (i,)
            else:
                # a sub-table of the latest array-of-tables entry: [[links]] then [links.x]
                for p in sorted(counts, key=len, reverse=True):
                    if path[: len(p)] == p and len(path) > len(p):
                        path = p + (counts[p],) + path[len(p):]
                        break
            table = path
            out.setdefault(path, n)
            continue
        m = _KEYLINE.match(line)
        if m:
            out.setdefault(table + tuple(_split_key(m.group(1))), n)
            rest = line[m.end():]
            for q in ('"""', "'''"):
                if rest.count(q) == 1:
                    in_multiline = q
    return out


class _Ctx:
    """Reads values from the parsed document and raises errors that point at the line."""

    def __init__(self, file: str, lines: dict[tuple, int]):
        self.file = file
        self.lines = lines

    def line(self, path: tuple) -> int | None:
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None

    def error(self, path: tuple, message: str) -> ConfigError:
        key = ".".join(str(x) if not isinstance(x, int) else "[%d]" % x for x in path).replace(".[", "[")
        return ConfigError(message, key, self.file, self.line(path))

    def table(self, d: dict, path: tuple, known: tuple) -> dict:
        if not isinstance(d, dict):
            raise self.error(path, "must be a table")
        for k in d:
            if k not in known:
                raise self.error(path + (k,), "unknown key (known: %s)" % ", ".join(known))
        return d

    def get(self, d: dict, path: tuple, key: str, kind, default=None, lo=None, hi=None, required=False,
            choices=None):
        p = path + (key,)
        if key not in d:
            if required:
                raise self.error(path, "missing required key %r" % key)
            return default
        v = d[key]
        if kind is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            v = float(v) if ok else v
        elif kind is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        else:
            ok = isinstance(v, kind)
        if not ok:
            raise self.error(p, "must be %s, got %r" % (_kind_name(kind), v))
        if lo is not None and v < lo or hi is not None and v > hi:
            raise self.error(p, "%r out of range %s..%s" % (v, lo, hi))
        if choices is not None and v not in choices:
            raise self.error(p, "%r is not one of %s" % (v, ", ".join(map(str, choices))))
        return v


def _kind_name(kind) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            list: "an array", dict: "a table"}.get(kind, str(kind))


# ---------------------------------------------------------------- schema

@dataclass
class LinkConfig:
    name: str
    type: str
    port: str = ""  # serial: device path (prefer /dev/serial/by-id/...)
    url: str = ""  # url/tcp: pyserial URL or tcp://host:port
    baudrate: int = 115200
    address: str = ""  # ble: MAC or bleak device name
    reconnect_max: float = 30.0


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
    hops: int = 2
    base: int = 10  # level at night with nobody around
    full: int = 100  # level at a pole that saw motion
    prelight: int = 70  # level of neighbours ahead
    hold: int = 60  # s a raised level is held
    day_level: int = 0
    dusk_offset_min: int = 0  # lights on this many minutes after sunset (negative: before)
    dawn_offset_min: int = 0  # lights off this many minutes after sunrise
    edges: list[tuple[str, str]] = field(default_factory=list)
    curfew: list[CurfewWindow] = field(default_factory=list)  # caps on the level by local time
    fault_ma: int = 20  # lamp current below this while lit = lamp fault


@dataclass
class WasteConfig:
    near_full: int = 80
    full: int = 95
    fire_temp: int = 70  # °C in a container that raises a fire alarm even if the device did not


@dataclass
class LockerConfig:
    loan_hours: float = 72.0  # an emptied compartment not refilled by then is overdue
    door_open_max_s: int = 300


@dataclass
class SiteConfig:
    name: str
    latitude: float
    longitude: float
    timezone: str = "Europe/Berlin"
    lighting: LightingConfig = field(default_factory=LightingConfig)
    waste: WasteConfig = field(default_factory=WasteConfig)
    lockers: LockerConfig = field(default_factory=LockerConfig)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass
class RoleConfig:
    heartbeat: int  # s, sent to the device in welcome.hb
    offline_factor: float = 2.5  # silent for factor * heartbeat + grace -> offline
    offline_grace: float = 5.0


@dataclass
class SessionConfig:
    retries: int = 5  # downlink command transmissions before giving up
    retry_base: float = 0.5  # s, doubled each retry
    retry_max: float = 8.0
    queue: int = 16  # queued commands per device; more are refused with a typed error
    time_sync: int = 6 * 3600  # s between time commands to a device
    commit_ms: float = 2.0  # group commit window for events before acks go out
    command_timeout: float = 20.0  # s from asking a command to giving up on it (unless the asker says otherwise)


@dataclass
class Config:
    path: str = ""
    state_dir: str = DEFAULT_STATE_DIR
    api_socket: str = DEFAULT_SOCKET
    api_group: str = ""
    log_level: str = "info"
    links: list[LinkConfig] = field(default_factory=list)
    sites: dict[str, SiteConfig] = field(default_factory=dict)
    roles: dict[str, RoleConfig] = field(default_factory=dict)
    session: SessionConfig = field(default_factory=SessionConfig)
    uplink_table: dict[str, Any] = field(default_factory=dict)
    uplink: Any = None  # gateway.uplink.UplinkConfig, validated by the uplink's own schema

    @property
    def registry_path(self) -> str:
        return os.path.join(self.state_dir, "registry.sqlite")

    @property
    def outbox_path(self) -> str:
        return os.path.join(self.state_dir, "outbox.sqlite")

    def role(self, name: str) -> RoleConfig:
        return self.roles.get(name) or RoleConfig(DEFAULT_HEARTBEAT.get(name, 60))


_TOP = ("gateway", "uplink", "links", "sites", "roles", "session")


def _hhmm(ctx: _Ctx, path: tuple, v) -> int:
    if not isinstance(v, str) or not re.fullmatch(r"\d{1,2}:\d{2}", v):
        raise ctx.error(path, "must be a time \"HH:MM\", got %r" % (v,))
    h, m = map(int, v.split(":"))
    if h > 23 or m > 59:
        raise ctx.error(path, "%r is not a time of day" % v)
    return h * 60 + m


def _links(ctx: _Ctx, raw) -> list[LinkConfig]:
    if not isinstance(raw, list):
        raise ctx.error(("links",), "must be an array of tables: [[links]]")
    out = []
    names = set()
    for i, d in enumerate(raw):
        p = ("links", i)
        ctx.table(d, p, ("name", "type", "port", "url", "baudrate", "address", "reconnect_max"))
        t = ctx.get(d, p, "type", str, required=True, choices=LINK_TYPES)
        name = ctx.get(d, p, "name", str, default="%s%d" % (t, i))
        if name in names:
            raise ctx.error(p + ("name",), "duplicate link name %r" % name)
        names.add(name)
        lk = LinkConfig(name=name, type=t,
                        port=ctx.get(d, p, "port", str, "", required=(t == "serial")),
                        url=ctx.get(d, p, "url", str, "", required=(t in ("url", "tcp"))),
                        baudrate=ctx.get(d, p, "baudrate", int, 115200, 300, 4_000_000),
                        address=ctx.get(d, p, "address", str, "", required=(t == "ble")),
                        reconnect_max=ctx.get(d, p, "reconnect_max", float, 30.0, 0.1, 3600))
        if t == "tcp" and not re.fullmatch(r"(tcp|socket)://[^:/]+:\d+/?", lk.url):
            raise ctx.error(p + ("url",), "must be tcp://HOST:PORT, got %r" % lk.url)
        out.append(lk)
    return out


def _site(ctx: _Ctx, name: str, d) -> SiteConfig:
    p = ("sites", name)
    ctx.table(d, p, ("latitude", "longitude", "timezone", "lighting", "waste", "lockers"))
    tzname = ctx.get(d, p, "timezone", str, "Europe/Berlin")
    try:
        ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError):
        raise ctx.error(p + ("timezone",), "unknown time zone %r (use an IANA name like Europe/Berlin)" % tzname)
    site = SiteConfig(name=name,
                      latitude=ctx.get(d, p, "latitude", float, required=True, lo=-90, hi=90),
                      longitude=ctx.get(d, p, "longitude", float, required=True, lo=-180, hi=180),
                      timezone=tzname)
    lp = p + ("lighting",)
    ld = ctx.table(d.get("lighting", {}), lp, tuple(LightingConfig.__dataclass_fields__))
    L = LightingConfig()
    for k in ("hops",):
        setattr(L, k, ctx.get(ld, lp, k, int, getattr(L, k), 0, 15))
    for k in ("base", "full", "prelight", "day_level"):
        setattr(L, k, ctx.get(ld, lp, k, int, getattr(L, k), 0, 100))
    L.hold = ctx.get(ld, lp, "hold", int, L.hold, 1, 3600)
    L.fault_ma = ctx.get(ld, lp, "fault_ma", int, L.fault_ma, 0, 65535)
    for k in ("dusk_offset_min", "dawn_offset_min"):
        setattr(L, k, ctx.get(ld, lp, k, int, 0, -180, 180))
    edges = ctx.get(ld, lp, "edges", list, [])
    for j, e in enumerate(edges):
        if not (isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) and 1 <= len(x) <= 8 for x in e)):
            raise ctx.error(lp + ("edges",), "edge %d must be a pair of pole ids [\"l001\", \"l002\"], got %r" % (j, e))
        if e[0] == e[1]:
            raise ctx.error(lp + ("edges",), "edge %d joins %r to itself" % (j, e[0]))
        L.edges.append((e[0], e[1]))
    curfew = ctx.get(ld, lp, "curfew", list, [])
    if len(curfew) > 4:
        raise ctx.error(lp + ("curfew",), "at most 4 windows (the device holds 4)")
    for j, w in enumerate(curfew):
        wp = lp + ("curfew",)
        if not isinstance(w, dict) or set(w) - {"start", "end", "max"} or not {"start", "end"} <= set(w):
            raise ctx.error(wp, "window %d must be {start = \"HH:MM\", end = \"HH:MM\", max = LEVEL}" % j)
        mx = w.get("max", 0)
        if not isinstance(mx, int) or isinstance(mx, bool) or not 0 <= mx <= 100:
            raise ctx.error(wp, "window %d: max must be a level 0..100, got %r" % (j, mx))
        L.curfew.append(CurfewWindow(_hhmm(ctx, wp, w["start"]), _hhmm(ctx, wp, w["end"]), mx))
    if L.prelight > L.full:
        raise ctx.error(lp + ("prelight",), "prelight level %d is above full %d" % (L.prelight, L.full))
    site.lighting = L

    wp = p + ("waste",)
    wd = ctx.table(d.get("waste", {}), wp, ("near_full", "full", "fire_temp"))
    W = WasteConfig(near_full=ctx.get(wd, wp, "near_full", int, 80, 1, 100),
                    full=ctx.get(wd, wp, "full", int, 95, 1, 100),
                    fire_temp=ctx.get(wd, wp, "fire_temp", int, 70, 30, 125))
    if W.near_full >= W.full:
        raise ctx.error(wp + ("near_full",), "near_full %d must be below full %d" % (W.near_full, W.full))
    site.waste = W

    kp = p + ("lockers",)
    kd = ctx.table(d.get("lockers", {}), kp, ("loan_hours", "door_open_max_s"))
    site.lockers = LockerConfig(loan_hours=ctx.get(kd, kp, "loan_hours", float, 72.0, 0.001, 24 * 365),
                                door_open_max_s=ctx.get(kd, kp, "door_open_max_s", int, 300, 1, 86400))
    return site


def parse(text: str, file: str = "<config>", env: dict | None = None) -> Config:
    """Validate a TOML document; raises ConfigError naming file, line and key."""
    env = os.environ if env is None else env
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        raise ConfigError("not valid TOML: %s" % e, "", file, int(m.group(1)) if m else None) from None
    ctx = _Ctx(file, key_lines(text))
    ctx.table(doc, (), _TOP)
    cfg = Config(path=file)

    gd = ctx.table(doc.get("gateway", {}), ("gateway",), ("state_dir", "api_socket", "api_group", "log_level"))
    cfg.state_dir = env.get(ENV_STATE_DIR) or ctx.get(gd, ("gateway",), "state_dir", str, DEFAULT_STATE_DIR)
    cfg.api_socket = env.get(ENV_SOCKET) or ctx.get(gd, ("gateway",), "api_socket", str, DEFAULT_SOCKET)
    cfg.api_group = ctx.get(gd, ("gateway",), "api_group", str, "")
    cfg.log_level = ctx.get(gd, ("gateway",), "log_level", str, "info",
                            choices=("debug", "info", "warning", "error"))

    cfg.links = _links(ctx, doc.get("links", []))

    sites = ctx.table(doc.get("sites", {}), ("sites",), tuple(doc.get("sites", {})))
    if not sites:
        raise ctx.error(("sites",), "at least one site is needed: [sites.NAME] with latitude and longitude")
    for name, sd in sites.items():
        if not re.fullmatch(r"[a-z0-9_\-]{1,32}", name):
            raise ctx.error(("sites", name), "site name must be 1-32 of a-z 0-9 _ - (it is an MQTT topic level)")
        cfg.sites[name] = _site(ctx, name, sd)

    rd = ctx.table(doc.get("roles", {}), ("roles",), ROLES)
    for role in ROLES:
        p = ("roles", role)
        r = ctx.table(rd.get(role, {}), p, ("heartbeat", "offline_factor", "offline_grace"))
        cfg.roles[role] = RoleConfig(
            heartbeat=ctx.get(r, p, "heartbeat", int, DEFAULT_HEARTBEAT[role], 1, 86400),
            offline_factor=ctx.get(r, p, "offline_factor", float, 2.5, 1.0, 100.0),
            offline_grace=ctx.get(r, p, "offline_grace", float, 5.0, 0.0, 86400.0))

    sp = ("session",)
    sd = ctx.table(doc.get("session", {}), sp, tuple(SessionConfig.__dataclass_fields__))
    S = SessionConfig()
    S.retries = ctx.get(sd, sp, "retries", int, S.retries, 1, 20)
    S.retry_base = ctx.get(sd, sp, "retry_base", float, S.retry_base, 0.01, 60)
    S.retry_max = ctx.get(sd, sp, "retry_max", float, S.retry_max, 0.01, 600)
    S.queue = ctx.get(sd, sp, "queue", int, S.queue, 1, 1024)
    S.time_sync = ctx.get(sd, sp, "time_sync", int, S.time_sync, 60, 7 * 86400)
    S.commit_ms = ctx.get(sd, sp, "commit_ms", float, S.commit_ms, 0.0, 1000)
    S.command_timeout = ctx.get(sd, sp, "command_timeout", float, S.command_timeout, 0.1, 3600)
    cfg.session = S

    ut = doc.get("uplink", {})
    if not isinstance(ut, dict):
        raise ctx.error(("uplink",), "must be a table")
    ut = dict(ut)
    ut.setdefault("sites", sorted(cfg.sites))
    for i, site in enumerate(ut["sites"] if isinstance(ut["sites"], list) else []):
        if site not in cfg.sites:
            raise ctx.error(("uplink", "sites"), "entry %d: %r is not a [sites.NAME] table in this file" % (i, site))
    cfg.uplink_table = ut
    from gateway.uplink import UplinkConfig, UplinkConfigError

    try:
        cfg.uplink = UplinkConfig.from_mapping(ut, where="uplink")
    except UplinkConfigError as e:
        path = tuple(int(x) if x.isdigit() else x for x in re.split(r"[.\[\]]+", e.key) if x)
        raise ConfigError(e.message, e.key, file, ctx.line(path)) from None
    return cfg


def load(path: str | None = None, env: dict | None = None) -> Config:
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
