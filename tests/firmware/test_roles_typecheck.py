"""The role applications type-check against the MicroPython ESP32 stubs (micropython-esp32-stubs with
micropython-stdlib-stubs as the typeshed), i.e. they only use APIs the device firmware has.
(common and container_sensor: test_runtime_typecheck.py, with a stricter configuration.)"""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _site(dist: str) -> Path:
    try:
        return Path(str(metadata.distribution(dist).locate_file("")))
    except metadata.PackageNotFoundError:
        pytest.skip(f"{dist} not installed (pip install -e .[test])")


@pytest.mark.parametrize("package", ["light_pole", "locker"])
def test_role_type_checks_against_micropython_esp32_stubs(tmp_path, package):
    pytest.importorskip("mypy")
    esp32 = _site("micropython-esp32-stubs")
    std = _site("micropython-stdlib-stubs")
    # a path with only the stub files: the site-packages of this venv also hold CPython modules
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for f in metadata.distribution("micropython-esp32-stubs").files or ():
        top = f.parts[0]
        if (f.suffix == ".pyi" or len(f.parts) > 1) and not top.endswith(".dist-info") and top != "stdlib":
            src = esp32 / top
            if src.exists() and not (stubs / top).exists():
                (stubs / top).symlink_to(src)
    cfg = tmp_path / "mypy.ini"
    cfg.write_text("[mypy]\nno_site_packages = True\nfollow_imports = silent\ncheck_untyped_defs = True\n"
                   "[mypy-_mpy_shed.*,math,machine,micropython,time,array,gc,vfs,hashlib]\nignore_errors = True\n")
    cp = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg), "--custom-typeshed-dir", str(std),
                         "--no-incremental", "--cache-dir", str(tmp_path / "cache"), "-p", package],
                        capture_output=True, text=True, cwd=ROOT / "firmware",
                        env={"MYPYPATH": f"{stubs}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "Success" in cp.stdout
