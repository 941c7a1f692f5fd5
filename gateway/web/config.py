"""`[web]` in gateway.toml: where the dashboard listens, its TLS and its operators."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from gateway.configread import setting

DEFAULT_LISTEN = "127.0.0.1:8380"


@dataclass
class WebConfig:
    listen: str = setting(DEFAULT_LISTEN)  # HOST:PORT; "" = no dashboard; port 0 = any free port
    tls_cert: str = setting("")  # PEM certificate chain; required unless listen is a loopback address
    tls_key: str = setting("")  # its private key (mode 0600)
    operators_file: str = setting("")  # default STATE_DIR/operators.json (park-gateway operator add NAME)
    history: int = setting(720, lo=10, hi=100_000)  # points kept per device and value (memory only)
    session_hours: float = setting(12.0, lo=0.1, hi=24 * 30)  # an operator's login lasts this long
    lamp_watts: float = setting(30.0, lo=0.1, hi=2000)  # a pole's rated lamp power, for the energy report

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_web(r, d, path: tuple, state_dir: str) -> WebConfig:
    """Validate `[web]`: a dashboard reachable from the network only with TLS (and login for actions)."""
    w = WebConfig(**r.section(d, path, WebConfig))
    if w.listen:
        host, _, port = w.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise r.error(path + ("listen",), "must be HOST:PORT (e.g. 127.0.0.1:8380), got %r" % w.listen)
        if not loopback(w.host) and not (w.tls_cert and w.tls_key):
            raise r.error(path + ("listen",), "%s is reachable from the network: set tls_cert and tls_key "
                          "(or listen on 127.0.0.1 and use an SSH tunnel)" % w.listen)
    if bool(w.tls_cert) != bool(w.tls_key):
        raise r.error(path + ("tls_key" if w.tls_cert else "tls_cert",), "tls_cert and tls_key go together")
    if not w.operators_file:
        w.operators_file = os.path.join(state_dir, "operators.json")
    return w
