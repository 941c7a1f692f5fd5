"""Typed errors of park-device: each names what was wrong, where, and what to do.

Every error carries a stable ``code`` (for --json and scripts) and an exit status,
so a technician's script can branch on "port_busy" without parsing prose.
"""
from __future__ import annotations


class DeviceToolError(Exception):
    """Base class. ``code`` is stable, ``hint`` says how to fix it, ``where`` locates it."""

    code = "error"
    exit_status = 1

    def __init__(self, message: str, *, hint: str = "", where: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where

    def as_dict(self) -> dict:
        d = {"code": self.code, "message": self.message}
        if self.where:
            d["where"] = self.where
        if self.hint:
            d["hint"] = self.hint
        return d

    def __str__(self) -> str:
        s = self.message
        if self.where:
            s = f"{self.where}: {s}"
        if self.hint:
            s += f" ({self.hint})"
        return s


class NoPort(DeviceToolError):
    code, exit_status = "no_port", 10


class AmbiguousPort(DeviceToolError):
    code, exit_status = "ambiguous_port", 11


class PortBusy(DeviceToolError):
    code, exit_status = "port_busy", 12


class NoAnswer(DeviceToolError):
    """The port opened but no MicroPython REPL answered (wrong port, board hung, no firmware)."""
    code, exit_status = "no_answer", 13


class WrongChip(DeviceToolError):
    code, exit_status = "wrong_chip", 14


class UnknownRole(DeviceToolError):
    code, exit_status = "unknown_role", 15


class WrongRole(DeviceToolError):
    """The board is provisioned for another role than the one asked for."""
    code, exit_status = "wrong_role", 16


class MpyMismatch(DeviceToolError):
    code, exit_status = "mpy_mismatch", 17


class KeyConflict(DeviceToolError):
    code, exit_status = "key_conflict", 18


class BadConfig(DeviceToolError):
    code, exit_status = "bad_config", 19


class BoardError(DeviceToolError):
    """The board answered but a command on it failed (file system full, exception)."""
    code, exit_status = "board_error", 20


class VerifyFailed(DeviceToolError):
    code, exit_status = "verify_failed", 21


class NotProvisioned(DeviceToolError):
    code, exit_status = "not_provisioned", 22


class NotDeployed(DeviceToolError):
    code, exit_status = "not_deployed", 23


class SelftestFailed(DeviceToolError):
    code, exit_status = "selftest_failed", 24


class RegistryError(DeviceToolError):
    code, exit_status = "registry_error", 25


class BadImage(DeviceToolError):
    code, exit_status = "bad_image", 26


class FlashFailed(DeviceToolError):
    code, exit_status = "flash_failed", 27


class BuildFailed(DeviceToolError):
    code, exit_status = "build_failed", 28


class ManifestError(BuildFailed):
    """A firmware manifest.py is missing, broken, or lists a file that is not there."""
    code, exit_status = "bad_manifest", 29


class ConfigConflict(DeviceToolError):
    """Provisioning would overwrite config values the board has now (set since, e.g. by the gateway)."""
    code, exit_status = "config_conflict", 30


class NoRecovery(DeviceToolError):
    """recover could not stop the firmware within the timeout."""
    code, exit_status = "no_recovery", 31
