"""Start a real Mosquitto broker on a free loopback port for tests and benchmarks.

    with Mosquitto() as broker:            # or Mosquitto(persistence_dir=tmp)
        broker.port                        # connect to 127.0.0.1:broker.port
        broker.stop(); broker.start()      # an outage; the port stays the same

The config sets ``set_tcp_nodelay true`` (Mosquitto's default Nagle setting
delays PUBACKs and caps QoS 1 throughput) and, unless a persistence directory
is given, ``persistence false``.  ``extra`` lines are appended verbatim
(listeners for TLS, password_file, ...).
"""

from __future__ import annotations

import base64
import hashlib

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Mosquitto", "free_port", "mosquitto_binary"]


def mosquitto_binary() -> str | None:
    for candidate in (os.environ.get("MOSQUITTO"), "/usr/sbin/mosquitto", shutil.which("mosquitto")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """One broker process; ``start``/``stop`` may be called repeatedly on the same port."""

    def __init__(self, port: int | None = None, *, persistence_dir: str | os.PathLike[str] | None = None,
                 extra: list[str] | None = None, listen: bool = True) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto not found: install the Debian package `mosquitto` (./dev setup does)")
        self.binary = binary
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._dir = Path(tempfile.mkdtemp(prefix="park-mosquitto-"))
        self.persistence_dir = Path(persistence_dir) if persistence_dir else None
        self.extra = list(extra or [])
        self.listen = listen
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self._dir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}" if self.listen else "",
            "allow_anonymous true" if not any(l.startswith("allow_anonymous") for l in self.extra) else "",
            "set_tcp_nodelay true",
            # As root, Mosquitto would switch to user "mosquitto" and lose access to our temp dirs.
            f"user {pwd.getpwuid(os.getuid()).pw_name}" if os.geteuid() == 0 else "",
            "max_queued_messages 0",  # unlimited for offline persistent subscribers
            "max_inflight_messages 100",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self.persistence_dir:
            self.persistence_dir.mkdir(parents=True, exist_ok=True)
            lines += ["persistence true", f"persistence_location {self.persistence_dir}/", "autosave_interval 0"]
        else:
            lines.append("persistence false")
        lines += self.extra
        conf = self._dir / "mosquitto.conf"
        conf.write_text("\n".join(l for l in lines if l) + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        if self.proc is not None and self.proc.poll() is None:
            return self
        conf = self._write_config()
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}{self.log()}")
            if all(self._accepts(port) for port in self._listener_ports()):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not accept connections on {self.port} within {timeout} s\n{self.log()}")

    def _listener_ports(self) -> list[int]:
        ports = [self.port] if self.listen else []
        ports += [int(line.split()[1]) for line in self.extra if line.startswith("listener ")]
        return ports

    def _accepts(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def mosquitto_password_line(user: str, password: str) -> str:
    """A Mosquitto 2 password file entry ($7$ = PBKDF2-SHA512), as mosquitto_passwd writes it."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
