"""Validated configuration of the backbone uplink (the ``[uplink]`` TOML table).

``UplinkConfig.from_mapping(table)`` checks every key and raises
``UplinkConfigError`` naming the dotted key (``uplink.tls.ca_file``) so the
gateway's config loader can add the file and line.  Unknown keys are errors:
a typo must not silently fall back to a default.
"""

from __future__ import annotations

import os
import re
import socket
import stat
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from .errors import UplinkConfigError
from .topics import check_segment

__all__ = ["UplinkConfig", "TlsConfig", "OutboxConfig", "UplinkConfigError"]

_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DURABILITY = {"full": "FULL", "normal": "NORMAL"}


@dataclass(frozen=True)
class TlsConfig:
    """TLS towards the broker; ``enabled`` is implied by an ``mqtts://`` URL."""

    enabled: bool = False
    ca_file: str | None = None  # None: the system trust store
    cert_file: str | None = None  # client certificate (mutual TLS)
    key_file: str | None = field(default=None, repr=False)
    verify_hostname: bool = True


@dataclass(frozen=True)
class OutboxConfig:
    """Store-and-forward caps; beyond them the oldest rows are dropped and counted."""

    max_messages: int = 1_000_000
    max_bytes: int = 256 * 1024 * 1024
    max_age_s: float = 7 * 24 * 3600.0
    # "full": a committed row survives power loss (fsync per group commit);
    # "normal": it survives a crash of the process, not of the machine.
    durability: str = "full"

    @property
    def sqlite_synchronous(self) -> str:
        return _DURABILITY[self.durability]


@dataclass(frozen=True)
class UplinkConfig:
    """Everything the uplink needs; defaults suit a Pi talking to one city broker."""

    sites: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 1883
    gateway_id: str = field(default_factory=lambda: _default_gateway_id())
    client_id: str | None = None  # default: "park-gw-<gateway_id>"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    topic_prefix: str = "park"
    keepalive_s: int = 30
    inflight: int = 100
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    command_timeout_s: float = 10.0
    request_max_age_s: float = 30.0  # older (or retained) backbone requests are answered "stale"
    tls: TlsConfig = field(default_factory=TlsConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)

    @property
    def mqtt_client_id(self) -> str:
        return self.client_id or f"park-gw-{self.gateway_id}"

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, where: str = "uplink") -> "UplinkConfig":
        """Build from a parsed TOML table; ``where`` prefixes key names in errors."""
        return _parse(table, where)


def _default_gateway_id() -> str:
    name = socket.gethostname().split(".")[0] or "gateway"
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", name)[:32]
    return cleaned or "gateway"


class _Table:
    """Typed reads from one TOML table that remember which keys were used."""

    def __init__(self, table: Any, where: str) -> None:
        if not isinstance(table, Mapping):
            raise UplinkConfigError(where, f"must be a table, got {type(table).__name__}")
        self.table = table
        self.where = where
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}"

    def get(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int subclass; never accept true for a number.
        if isinstance(value, bool) and bool not in kinds:
            raise UplinkConfigError(self.key(name), f"must be {_kind_name(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise UplinkConfigError(
                self.key(name), f"must be {_kind_name(kinds)}, got {type(value).__name__} {value!r}"
            )
        return value

    def number(self, name: str, default: float, lo: float, hi: float, integer: bool = False) -> Any:
        value = self.get(name, int if integer else (int, float), default)
        if not lo <= value <= hi:
            raise UplinkConfigError(self.key(name), f"must be between {lo} and {hi}, got {value}")
        return value

    def sub(self, name: str) -> "_Table":
        self.used.add(name)
        return _Table(self.table.get(name, {}), self.key(name))

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise UplinkConfigError(self.key(unknown[0]), "unknown key (check the spelling)")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _readable_file(t: _Table, name: str) -> str | None:
    path: str | None = t.get(name, str, None)
    if path is None:
        return None
    if not os.path.isfile(path):
        raise UplinkConfigError(t.key(name), f"file not found: {path}")
    if not os.access(path, os.R_OK):
        raise UplinkConfigError(t.key(name), f"file not readable by this user: {path}")
    return path


def _private_file(t: _Table, name: str) -> str | None:
    """A secret file must not be readable by other users (like ssh keys)."""
    path = _readable_file(t, name)
    if path is not None and os.stat(path).st_mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise UplinkConfigError(
            t.key(name), f"{path} is accessible by other users; chmod 600 (or 640 for a service group)"
        )
    return path


def _parse(table: Mapping[str, Any], where: str) -> UplinkConfig:
    t = _Table(table, where)

    sites_raw = t.get("sites", list, None)
    if not sites_raw:
        raise UplinkConfigError(t.key("sites"), "must list at least one site, e.g. sites = [\"stadtpark\"]")
    sites = []
    for i, site in enumerate(sites_raw):
        key = f"{t.key('sites')}[{i}]"
        if not isinstance(site, str):
            raise UplinkConfigError(key, f"must be a string, got {type(site).__name__}")
        try:
            check_segment(site, "site")
        except ValueError as exc:
            raise UplinkConfigError(key, str(exc)) from None
        sites.append(site)

    broker = t.get("broker", str, "mqtt://127.0.0.1:1883")
    url = urlsplit(broker)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname or url.path not in ("", "/"):
        raise UplinkConfigError(t.key("broker"), f"must look like mqtt://HOST:PORT or mqtts://HOST:PORT, got {broker!r}")
    if url.username or url.password:
        raise UplinkConfigError(t.key("broker"), "put credentials in username / password_file, not in the URL")
    try:
        port = url.port or (8883 if url.scheme == "mqtts" else 1883)
    except ValueError:
        raise UplinkConfigError(t.key("broker"), f"bad port in {broker!r}") from None

    gateway_id = t.get("gateway_id", str, None) or _default_gateway_id()
    try:
        check_segment(gateway_id, "gateway_id")
    except ValueError as exc:
        raise UplinkConfigError(t.key("gateway_id"), str(exc)) from None
    client_id = t.get("client_id", str, None)
    if client_id is not None and not _CLIENT_ID.match(client_id):
        raise UplinkConfigError(t.key("client_id"), "must be 1-64 characters of A-Z a-z 0-9 _ . -")

    username = t.get("username", str, None)
    password = t.get("password", str, None)
    password_file = _private_file(t, "password_file")
    if password is not None and password_file is not None:
        raise UplinkConfigError(t.key("password_file"), "give password or password_file, not both")
    if password_file is not None:
        with open(password_file, encoding="utf-8") as fh:
            password = fh.read().rstrip("\r\n")
        if not password:
            raise UplinkConfigError(t.key("password_file"), f"{password_file} is empty")
    if password is not None and username is None:
        raise UplinkConfigError(t.key("username"), "a password needs a username")

    prefix = t.get("topic_prefix", str, "park")
    try:
        for part in prefix.split("/"):
            check_segment(part, "topic_prefix")
    except ValueError as exc:
        raise UplinkConfigError(t.key("topic_prefix"), str(exc)) from None

    keepalive = t.number("keepalive_s", 30, 5, 3600, integer=True)
    inflight = t.number("inflight", 100, 1, 1000, integer=True)
    rmin = float(t.number("reconnect_min_s", 0.5, 0.01, 60))
    rmax = float(t.number("reconnect_max_s", 30.0, 0.01, 3600))
    if rmax < rmin:
        raise UplinkConfigError(t.key("reconnect_max_s"), f"must be >= reconnect_min_s ({rmin})")
    ctimeout = float(t.number("command_timeout_s", 10.0, 0.1, 600))
    max_age = float(t.number("request_max_age_s", 30.0, 1, 86400))

    tt = t.sub("tls")
    tls_enabled = tt.get("enabled", bool, url.scheme == "mqtts")
    if url.scheme == "mqtts" and not tls_enabled:
        raise UplinkConfigError(tt.key("enabled"), "an mqtts:// broker needs TLS; remove enabled = false")
    ca_file = _readable_file(tt, "ca_file")
    cert_file = _readable_file(tt, "cert_file")
    key_file = _private_file(tt, "key_file")
    verify_hostname = tt.get("verify_hostname", bool, True)
    if (cert_file is None) != (key_file is None):
        missing = "key_file" if key_file is None else "cert_file"
        raise UplinkConfigError(tt.key(missing), "a client certificate needs both cert_file and key_file")
    if not tls_enabled and (ca_file or cert_file or not verify_hostname):
        raise UplinkConfigError(tt.key("enabled"), "TLS files are set but TLS is off; use mqtts:// or enabled = true")
    tt.finish()
    tls = TlsConfig(tls_enabled, ca_file, cert_file, key_file, verify_hostname)
    if tls.enabled:
        _check_tls_files(tls, tt)

    ot = t.sub("outbox")
    outbox = OutboxConfig(
        max_messages=ot.number("max_messages", 1_000_000, 10, 1_000_000_000, integer=True),
        max_bytes=ot.number("max_bytes", 256 * 1024 * 1024, 64 * 1024, 1 << 42, integer=True),
        max_age_s=float(ot.number("max_age_s", 7 * 24 * 3600.0, 1, 366 * 24 * 3600)),
        durability=ot.get("durability", str, "full"),
    )
    if outbox.durability not in _DURABILITY:
        raise UplinkConfigError(ot.key("durability"), f"must be one of {sorted(_DURABILITY)}, got {outbox.durability!r}")
    ot.finish()
    t.finish()

    return UplinkConfig(
        sites=tuple(sites), host=url.hostname, port=port, gateway_id=gateway_id, client_id=client_id,
        username=username, password=password, topic_prefix=prefix, keepalive_s=keepalive,
        inflight=inflight, reconnect_min_s=rmin, reconnect_max_s=rmax, command_timeout_s=ctimeout,
        request_max_age_s=max_age, tls=tls, outbox=outbox,
    )


def _check_tls_files(tls: TlsConfig, tt: _Table) -> None:
    """Load the files now so a bad PEM fails at `config check`, not at 3 a.m."""
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.ca_file)
        except (ssl.SSLError, ValueError) as exc:
            raise UplinkConfigError(tt.key("ca_file"), f"not a PEM CA certificate: {tls.ca_file} ({exc.__class__.__name__})") from None
    if tls.cert_file:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except ssl.SSLError as exc:
            raise UplinkConfigError(
                tt.key("cert_file"), f"certificate and key do not load or do not match: {tls.cert_file} ({exc.reason or exc.__class__.__name__})"
            ) from None
