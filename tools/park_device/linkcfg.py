"""A board's radio link from provision's flags: `link.kind` serial | ble | wifi, the Wi-Fi
network and the gateway's TCP server (firmware/common/config.py LINK_SCHEMA).

The Wi-Fi passphrase comes from a file, an environment variable or a prompt, never from
the command line (it would stay in the shell history and in `ps`), and no message of
park-device ever contains it. Everything is checked here, before the board is touched,
so a bad value is one clear error instead of a board that reports a radio fault.
"""
from __future__ import annotations

import getpass
import ipaddress
import os
import stat
import sys

from .errors import BadConfig

KINDS = ("serial", "ble", "wifi")
PSK_ENV = "PARK_WIFI_PSK"
DEFAULT_PORT = 7000  # gateway.toml.example's TCP server

_WIFI_FLAGS = ("--wifi-ssid", "--wifi-psk-file", "--wifi-psk-env", "--gateway")
_PSK_WAYS = f"--wifi-psk-file FILE (0600), --wifi-psk-env VAR, ${PSK_ENV}, or a prompt on a terminal"


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise BadConfig(f"unknown link kind {kind!r}", where="--link", hint="one of: " + ", ".join(KINDS))
    return kind


def check_ssid(ssid: str) -> str:
    n = len(ssid.encode())
    if not 1 <= n <= 32:
        raise BadConfig(f"Wi-Fi network name must be 1..32 bytes, got {n}", where="--wifi-ssid")
    return ssid


def check_psk(psk: str, where: str) -> str:
    """WPA2 passphrase: 8..63 printable ASCII characters. The message never shows it."""
    n = len(psk.encode())
    if not 8 <= n <= 63 or not all(" " <= c <= "~" for c in psk):
        raise BadConfig(f"the Wi-Fi passphrase must be 8..63 printable ASCII characters (it has {n} bytes)",
                        where=where, hint="WPA2-PSK; the passphrase is not shown")
    return psk


def parse_gateway(text: str) -> tuple[str, int]:
    """HOST[:PORT] -> (IPv4 address, port). An address, not a name: the board would block on DNS."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(DEFAULT_PORT)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise BadConfig(f"gateway {text!r} must be an IPv4 address with an optional port, e.g. 192.168.4.1:7000",
                        where="--gateway",
                        hint="a name would block the board in DNS; give the gateway's address") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise BadConfig(f"gateway port {port!r} must be 1..65535", where="--gateway")
    return host, int(port)


def read_psk_file(path: str) -> str:
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise BadConfig(f"cannot read the Wi-Fi passphrase file: {e.strerror}", where=path) from None
    except UnicodeDecodeError:
        raise BadConfig("the Wi-Fi passphrase file is not text", where=path) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BadConfig("the Wi-Fi passphrase file is readable by others", where=path, hint=f"chmod 600 {path}")
    return check_psk(text.rstrip("\r\n"), path)


def obtain_psk(psk_file: str | None, psk_env: str | None, environ=os.environ, stdin=sys.stdin,
               prompt=getpass.getpass) -> str:
    """The passphrase from the file, the variable, $PARK_WIFI_PSK, or a prompt on a terminal."""
    if psk_file:
        return read_psk_file(psk_file)
    var = psk_env or PSK_ENV
    if var in environ:
        return check_psk(environ[var], "$" + var)
    if psk_env:
        raise BadConfig(f"environment variable {psk_env} is not set", where="--wifi-psk-env")
    if hasattr(stdin, "isatty") and stdin.isatty():
        return check_psk(prompt("Wi-Fi passphrase (not shown): "), "prompt")
    raise BadConfig("a Wi-Fi link needs the network's passphrase", where="--wifi-psk-file",
                    hint="give it by " + _PSK_WAYS + "; never on the command line")


def link_section(kind: str | None, base: dict, ssid: str | None = None, psk_file: str | None = None,
                 psk_env: str | None = None, gateway: str | None = None, **psk_io) -> dict:
    """The link settings these flags give, on top of `base` (the link section from --config
    and --set). A Wi-Fi link ends up with a network, a passphrase and a gateway address."""
    flags = {"--wifi-ssid": ssid, "--wifi-psk-file": psk_file, "--wifi-psk-env": psk_env, "--gateway": gateway}
    given = [f for f in _WIFI_FLAGS if flags[f] is not None]
    out: dict = {}
    if kind is not None and check_kind(kind) != base.get("kind"):
        out["kind"] = kind
    kind = check_kind(out.get("kind", base.get("kind", "serial")))
    if kind != "wifi":
        if given:
            raise BadConfig(f"{given[0]} applies to --link wifi only, not --link {kind}", where=given[0],
                            hint="one of: " + ", ".join(KINDS) + "; wifi takes the network and the gateway")
        return out
    if ssid is not None:
        out["ssid"] = check_ssid(ssid)
    elif not base.get("ssid"):
        raise BadConfig("a Wi-Fi link needs the network's name", where="--wifi-ssid",
                        hint="--wifi-ssid NAME (or link.ssid in --config)")
    if gateway is not None:
        out["host"], out["port"] = parse_gateway(gateway)
    elif not base.get("host"):
        raise BadConfig("a Wi-Fi link needs the gateway's address", where="--gateway",
                        hint="--gateway ADDRESS[:PORT], the TCP server link of gateway.toml (port "
                             f"{DEFAULT_PORT} by default)")
    if psk_file is not None or psk_env is not None or not base.get("psk"):
        out["psk"] = obtain_psk(psk_file, psk_env, **psk_io)
    else:
        check_psk(base["psk"], "config file: link.psk")
    return out


def refuse_psk_in_sets(sets: dict) -> None:
    if "psk" in sets.get("link", {}):
        raise BadConfig("the Wi-Fi passphrase never goes on the command line (--set link.psk)", where="--set",
                        hint="give it by " + _PSK_WAYS)


def describe(link: dict) -> dict:
    """The link as a result may show it: everything but the passphrase."""
    shown = {k: link[k] for k in ("kind", "uart", "ssid", "host", "port") if k in link}
    if link.get("psk"):
        shown["psk"] = "(set)"
    return shown
