"""Validated configuration of the backbone uplink (the ``[uplink]`` TOML table).

The schema is declared here once (defaults and limits in each `setting`) and
read by the gateway's one config reader (gateway/configread.py): inside
``gateway.config.parse`` errors carry file and line; on its own,
``UplinkConfig.from_mapping(table)`` raises ``UplinkConfigError`` naming the
dotted key (``uplink.tls.ca_file``). Unknown keys are errors: a typo must not
silently fall back to a default.
"""

from __future__ import annotations

import os
import re
import socket
import stat
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from gateway.configread import ConfigError, Reader, setting

from .errors import UplinkConfigError
from .topics import check_segment

__all__ = ["UplinkConfig", "TlsConfig", "OutboxConfig", "UplinkConfigError", "read_uplink"]

_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DURABILITY = {"full": "FULL", "normal": "NORMAL"}


def _default_gateway_id() -> str:
    name = socket.gethostname().split(".")[0] or "gateway"
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", name)[:32]
    return cleaned or "gateway"


@dataclass(frozen=True)
class TlsConfig:
    """TLS towards the broker; ``enabled`` is implied by an ``mqtts://`` URL."""

    enabled: bool = setting(False)
    ca_file: str | None = setting(None, kind=str)  # None: the system trust store
    cert_file: str | None = setting(None, kind=str)  # client certificate (mutual TLS)
    key_file: str | None = setting(None, kind=str, repr=False)
    verify_hostname: bool = setting(True)


@dataclass(frozen=True)
class OutboxConfig:
    """Store-and-forward caps; beyond them the oldest rows are dropped and counted."""

    max_messages: int = setting(1_000_000, lo=10, hi=1_000_000_000)
    max_bytes: int = setting(256 * 1024 * 1024, lo=64 * 1024, hi=1 << 42)
    max_age_s: float = setting(7 * 24 * 3600.0, lo=1, hi=366 * 24 * 3600)
    # "full": a committed row survives power loss (fsync per group commit);
    # "normal": it survives a crash of the process, not of the machine.
    durability: str = setting("full", choices=tuple(_DURABILITY))

    @property
    def sqlite_synchronous(self) -> str:
        return _DURABILITY[self.durability]


@dataclass(frozen=True)
class UplinkConfig:
    """Everything the uplink needs; defaults suit a Pi talking to one city broker.

    TOML keys that are not fields: ``broker`` (mqtt[s]://HOST:PORT, giving host,
    port and tls.enabled) and ``password_file`` (giving password).
    """

    sites: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 1883
    gateway_id: str = setting(default_factory=_default_gateway_id)
    client_id: str | None = setting(None, kind=str)  # default: "park-gw-<gateway_id>"
    username: str | None = setting(None, kind=str)
    password: str | None = setting(None, kind=str, repr=False)
    topic_prefix: str = setting("park")
    keepalive_s: int = setting(30, lo=5, hi=3600)
    inflight: int = setting(100, lo=1, hi=1000)
    reconnect_min_s: float = setting(0.5, lo=0.01, hi=60)
    reconnect_max_s: float = setting(30.0, lo=0.01, hi=3600)
    command_timeout_s: float = setting(10.0, lo=0.1, hi=600)
    request_max_age_s: float = setting(30.0, lo=1, hi=86400)  # older (or retained) backbone requests are answered "stale"
    # the MQTT client in a process of its own (gateway/uplink/process.py): "on", "off", or "auto" = on
    # when this process may run on more than one CPU (a one-core Pi gains nothing and pays the hand-over)
    process: str = setting("auto", choices=("auto", "on", "off"))
    tls: TlsConfig = TlsConfig()
    outbox: OutboxConfig = OutboxConfig()

    @property
    def mqtt_client_id(self) -> str:
        return self.client_id or "park-gw-%s" % self.gateway_id

    @property
    def use_process(self) -> bool:
        if self.process == "auto":
            return len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) > 1
        return self.process == "on"

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, where: str = "uplink") -> "UplinkConfig":
        """Build from a parsed TOML table; ``where`` prefixes key names in errors."""
        try:
            return read_uplink(Reader(), table, tuple(where.split(".")))
        except ConfigError as e:
            raise UplinkConfigError(e.key, e.message) from None


DEFAULT_BROKER = "mqtt://%s:%d" % (UplinkConfig.host, UplinkConfig.port)
_EXTRA = ("sites", "broker", "password_file", "tls", "outbox")


def _segment(r: Reader, path: tuple, value: str, what: str) -> None:
    try:
        check_segment(value, what)
    except ValueError as exc:
        raise r.error(path, str(exc)) from None


def _readable_file(r: Reader, path: tuple, file: str | None) -> str | None:
    if file is None:
        return None
    if not os.path.isfile(file):
        raise r.error(path, "file not found: %s" % file)
    if not os.access(file, os.R_OK):
        raise r.error(path, "file not readable by this user: %s" % file)
    return file


def _private_file(r: Reader, path: tuple, file: str | None) -> str | None:
    """A secret file must not be readable by other users (like ssh keys)."""
    file = _readable_file(r, path, file)
    if file is not None and os.stat(file).st_mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise r.error(path, "%s is accessible by other users; chmod 600 (or 640 for a service group)" % file)
    return file


def read_uplink(r: Reader, table: Any, p: tuple) -> UplinkConfig:
    """The [uplink] table at path `p`, read and checked by `r` (errors name the key and, with a file, the line)."""
    v = r.section(table, p, UplinkConfig, extra=_EXTRA)

    sites_raw = r.get(table, p, "sites", list, None)
    if not sites_raw:
        raise r.error(p + ("sites",), "must list at least one site, e.g. sites = [\"stadtpark\"]")
    for i, site in enumerate(sites_raw):
        if not isinstance(site, str):
            raise r.error(p + ("sites", i), "must be a string, got %s" % type(site).__name__)
        _segment(r, p + ("sites", i), site, "site")

    bp = p + ("broker",)
    broker = r.get(table, p, "broker", str, DEFAULT_BROKER)
    url = urlsplit(broker)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname or url.path not in ("", "/"):
        raise r.error(bp, "must look like mqtt://HOST:PORT or mqtts://HOST:PORT, got %r" % broker)
    if url.username or url.password:
        raise r.error(bp, "put credentials in username / password_file, not in the URL")
    try:
        port = url.port or (8883 if url.scheme == "mqtts" else 1883)
    except ValueError:
        raise r.error(bp, "bad port in %r" % broker) from None

    v["gateway_id"] = v["gateway_id"] or _default_gateway_id()
    _segment(r, p + ("gateway_id",), v["gateway_id"], "gateway_id")
    if v["client_id"] is not None and not _CLIENT_ID.match(v["client_id"]):
        raise r.error(p + ("client_id",), "must be 1-64 characters of A-Z a-z 0-9 _ . -")

    pf = p + ("password_file",)
    password_file = _private_file(r, pf, r.get(table, p, "password_file", str, None))
    if v["password"] is not None and password_file is not None:
        raise r.error(pf, "give password or password_file, not both")
    if password_file is not None:
        with open(password_file, encoding="utf-8") as fh:
            v["password"] = fh.read().rstrip("\r\n")
        if not v["password"]:
            raise r.error(pf, "%s is empty" % password_file)
    if v["password"] is not None and v["username"] is None:
        raise r.error(p + ("username",), "a password needs a username")

    for part in v["topic_prefix"].split("/"):
        _segment(r, p + ("topic_prefix",), part, "topic_prefix")
    if v["reconnect_max_s"] < v["reconnect_min_s"]:
        raise r.error(p + ("reconnect_max_s",), "must be >= reconnect_min_s (%s)" % v["reconnect_min_s"])

    tp = p + ("tls",)
    tt = table.get("tls", {})
    t = r.section(tt, tp, TlsConfig, enabled=url.scheme == "mqtts")
    if url.scheme == "mqtts" and not t["enabled"]:
        raise r.error(tp + ("enabled",), "an mqtts:// broker needs TLS; remove enabled = false")
    t["ca_file"] = _readable_file(r, tp + ("ca_file",), t["ca_file"])
    t["cert_file"] = _readable_file(r, tp + ("cert_file",), t["cert_file"])
    t["key_file"] = _private_file(r, tp + ("key_file",), t["key_file"])
    if (t["cert_file"] is None) != (t["key_file"] is None):
        missing = "key_file" if t["key_file"] is None else "cert_file"
        raise r.error(tp + (missing,), "a client certificate needs both cert_file and key_file")
    if not t["enabled"] and (t["ca_file"] or t["cert_file"] or not t["verify_hostname"]):
        raise r.error(tp + ("enabled",), "TLS files are set but TLS is off; use mqtts:// or enabled = true")
    tls = TlsConfig(**t)
    if tls.enabled:
        _check_tls_files(r, tp, tls)

    outbox = OutboxConfig(**r.section(table.get("outbox", {}), p + ("outbox",), OutboxConfig))
    return UplinkConfig(sites=tuple(sites_raw), host=url.hostname, port=port, tls=tls, outbox=outbox, **v)


def _check_tls_files(r: Reader, tp: tuple, tls: TlsConfig) -> None:
    """Load the files now so a bad PEM fails at `config check`, not at 3 a.m."""
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.ca_file)
        except (ssl.SSLError, ValueError) as exc:
            raise r.error(tp + ("ca_file",), "not a PEM CA certificate: %s (%s)"
                          % (tls.ca_file, exc.__class__.__name__)) from None
    if tls.cert_file:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except ssl.SSLError as exc:
            raise r.error(tp + ("cert_file",), "certificate and key do not load or do not match: %s (%s)"
                          % (tls.cert_file, exc.reason or exc.__class__.__name__)) from None
