"""Type-check the device code against the MicroPython ESP32 stubs (micropython-esp32-stubs,
which pulls micropython-stdlib-stubs): the stubs say what `machine`, `time` and the
reduced stdlib really offer on the board, so a CPython-only call is caught here.

The same check by hand (docs/firmware.md):
    python -m pip install --target typings micropython-esp32-stubs
    MYPYPATH=typings:firmware:. mypy --custom-typeshed-dir typings --config-file <this file's CONFIG> \\
        firmware/common/*.py firmware/container_sensor/*.py
"""
from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUBS = ("micropython-esp32-stubs", "micropython-stdlib-stubs")
CHECKED = ("common", "container_sensor")

CONFIG = """[mypy]
python_version = 3.11
custom_typeshed_dir = {typings}
mypy_path = {typings}:{root}/firmware:{root}
explicit_package_bases = True
namespace_packages = True
check_untyped_defs = True
warn_unused_ignores = True
cache_dir = {cache}

# errors inside the published stubs themselves are not ours to fix
[mypy-machine,vfs,_mpy_shed.*,esp32,network,bluetooth]
ignore_errors = True

# the protocol package is checked by its owner; its types are still used here
[mypy-protocol.*]
follow_imports = silent
"""


def _typings(dst: Path) -> Path:
    for name in STUBS:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            pytest.skip(f"{name} not installed (pip install -e '.[test]')")
        for f in dist.files or ():
            if f.suffix != ".pyi" and f.name != "VERSIONS":
                continue
            src = Path(dist.locate_file(f))
            out = dst / f
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
    assert (dst / "machine.pyi").exists() and (dst / "stdlib" / "VERSIONS").exists()
    return dst


def test_firmware_type_checks_against_micropython_esp32_stubs(tmp_path):
    pytest.importorskip("mypy", reason="mypy not installed (pip install -e '.[test]')")
    typings = _typings(tmp_path / "typings")
    cfg = tmp_path / "mypy.ini"
    cfg.write_text(CONFIG.format(typings=typings, root=ROOT, cache=tmp_path / "cache"))
    files = [str(p) for pkg in CHECKED for p in sorted((ROOT / "firmware" / pkg).glob("*.py"))]
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg), *files],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout
