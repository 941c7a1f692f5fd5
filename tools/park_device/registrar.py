"""Registering a device with the gateway through its public interface, the `park-gateway device` CLI.

Why a subprocess and not the gateway's modules: the gateway owns its registry file (schema,
locking, telling a running daemon to reload); park-device only hands it an import file, the
same one a technician carries to a gateway by hand. Keys travel in a 0600 file inside a 0700
temporary directory, never on a command line or in output.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import KeyConflict, RegistryError

CONFLICTS = {"duplicate_device", "duplicate_key"}


def write_private(path: str, data: bytes) -> None:
    """Create a 0600 file from the start (no window where it is readable by others), replace atomically."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def entry(device_id: str, role: str, site: str, key: bytes, position: str | None) -> bytes:
    """One device as `park-gateway device import` reads it."""
    doc = {"id": device_id, "role": role, "site": site, "key_hex": key.hex(), "position": position}
    return (json.dumps(doc, sort_keys=True) + "\n").encode()


def find_gateway_cli() -> str:
    """park-gateway next to this Python (the same virtualenv), else on PATH."""
    here = Path(sys.executable).with_name("park-gateway")
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("park-gateway")
    if found:
        return found
    raise RegistryError("park-gateway is not installed here, so --registry cannot be used",
                        hint="use --import-file and run `park-gateway device import FILE` on the gateway")


class GatewayRegistry:
    """`park-gateway device ... --registry PATH --json`, each call bounded by `timeout` seconds."""

    def __init__(self, path: str, timeout: float = 30.0, create: bool = False, exe: str | None = None) -> None:
        self.path, self.timeout, self.create = path, timeout, create
        self.exe = exe or find_gateway_cli()

    def _run(self, *args: str) -> dict:
        argv = [self.exe, "device", *args, "--registry", self.path, "--json"]
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RegistryError(f"park-gateway device {args[0]} did not answer within {self.timeout:g} s",
                                where=self.path, hint="is the registry locked by a stuck process?") from None
        except OSError as e:
            raise RegistryError(f"cannot run {self.exe}: {e.strerror}", where=self.path) from None
        try:
            doc = json.loads(cp.stdout)
        except ValueError:
            last = (cp.stderr.strip().splitlines() or ["no output"])[-1]
            raise RegistryError(f"park-gateway device {args[0]} failed (exit {cp.returncode}): {last}",
                                where=self.path) from None
        if cp.returncode != 0 or (isinstance(doc, dict) and doc.get("ok") is False):
            e = doc.get("error") if isinstance(doc.get("error"), dict) else {}  # park-gateway's one error shape
            reason, message = e.get("code") or "registry_error", e.get("message") or "failed"
            cls = KeyConflict if reason in CONFLICTS else RegistryError
            err = cls(message, where=self.path, hint=_HINTS.get(reason, ""))
            err.reason = reason
            raise err
        return doc

    def lookup(self, device_id: str) -> dict | None:
        """The device's public record, or None if the id is free (also proves the registry is usable)."""
        try:
            return self._run(device_id)
        except RegistryError as e:
            if getattr(e, "reason", "") == "unknown_device":
                return None
            if getattr(e, "reason", "") == "no_registry" and self.create:
                return None
            raise

    def check(self, import_file: str) -> dict:
        """{id: {"registered", "same_key", "key_owner"}} for the file's entries; changes nothing."""
        if self.create and not os.path.exists(self.path):
            return {}
        return {c["id"]: c for c in self._run("import", import_file, "--check")["check"]}

    def import_file(self, import_file: str, replace: bool) -> dict:
        return self._run("import", import_file, *(["--replace"] if replace else []),
                         *(["--create"] if self.create else []))


_HINTS = {
    "no_registry": "check the --registry path; the gateway creates its registry when it first starts",
    "not_a_registry": "--registry must name the gateway's registry.sqlite (see [gateway] state_dir)",
    "duplicate_key": "run again with --replace to give the board a fresh key",
    "duplicate_device": "choose another --id, or --replace to re-key it (the old board stops working)",
}
